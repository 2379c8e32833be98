use super::*;

/// The target `text` resolves to, or the fault's message.
fn parse(text: &str) -> Result<CdnConfig, Message> {
    let raw = toml::from_str(text).map_err(|e| Message(e.to_string()))?;
    resolve_cdn(raw).map_err(|(_, message)| Message(message))
}

/// A fault's message, which the tests read words of.
#[derive(Debug, PartialEq)]
struct Message(String);

impl Message {
    fn contains(&self, words: &str) -> bool {
        self.0.contains(words)
    }
}

#[test]
fn each_kind_needs_its_keys_and_secrets_are_named_not_given() {
    let http = parse("kind = \"http\"\nurl = \"http://cache:6081/t/{path}\"").unwrap();
    assert_eq!(http.name, "http");
    assert!(matches!(
        http.target,
        CdnTarget::Http {
            method: PurgeMethod::Purge,
            concurrency: 8,
            ..
        }
    ));
    assert!(parse("kind = \"http\"\nurl = \"http://cache/t/\"")
        .unwrap_err()
        .contains("{path}"));
    assert!(parse("kind = \"cloudfront\"")
        .unwrap_err()
        .contains("distribution_id"));
    let cf = parse(
        "kind = \"cloudfront\"\ndistribution_id = \"E2QWRUHAPOMQZL\"\npath_prefix = \"tiles/\"",
    )
    .unwrap();
    assert_eq!(
        cf.target,
        CdnTarget::CloudFront {
            distribution_id: "E2QWRUHAPOMQZL".into(),
            path_prefix: "/tiles".into()
        }
    );
    let flare =
        parse("kind = \"cloudflare\"\nzone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"").unwrap();
    assert!(
        matches!(flare.target, CdnTarget::Cloudflare { ref token_env, .. } if token_env == "CLOUDFLARE_API_TOKEN")
    );
    assert!(parse("kind = \"fastly\"\nservice_id = \"s\"\ntoken = \"secret\"").is_err());
    assert!(parse("kind = \"akamai\"").unwrap_err().contains("akamai"));
    assert!(parse("kind = \"http\"\nname = \"a b\"\nurl = \"http://c/{path}\"").is_err());
}

#[test]
fn plain_http_apis_are_refused_except_on_loopback_hosts() {
    let with = |kind: &str, id: &str, url: &str| {
        parse(&format!("kind = \"{kind}\"\n{id}\napi_url = \"{url}\""))
    };
    let zone = "zone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"";
    let service = "service_id = \"SU1Z0isxPaozGVKXdv0eY\"";
    for url in [
        "http://127.0.0.1:8080/client/v4",
        "http://127.3.4.5",
        "http://[::1]:9000",
        "http://localhost:9000",
        "https://api.example.org",
    ] {
        assert!(with("cloudflare", zone, url).is_ok(), "{url}");
        assert!(with("fastly", service, url).is_ok(), "{url}");
    }
    for url in [
        "http://api.cloudflare.com/client/v4",
        "http://10.0.0.1",
        "http://[::2]:80",
        "http://localhost.example.org",
        "http://127.0.0.1.nip.io",
    ] {
        let refused = with("cloudflare", zone, url);
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("clear text")),
            "{url}: {refused:?}"
        );
        assert!(with("fastly", service, url).is_err(), "{url}");
    }
    // A loopback address as a user name is refused as userinfo, before its host is looked at.
    let refused = with("cloudflare", zone, "http://127.0.0.1@api.example.org");
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("user name or password")),
        "{refused:?}"
    );
}

#[test]
fn timeouts_default_and_a_purge_outlasts_its_request() {
    let http = parse("kind = \"http\"\nurl = \"http://c/{path}\"").unwrap();
    assert_eq!(http.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(http.purge_timeout, DEFAULT_PURGE_TIMEOUT);
    let set = parse(
        "kind = \"http\"\nurl = \"http://c/{path}\"\nrequest_timeout = \"2s\"\npurge_timeout = \"5s\"",
    )
    .unwrap();
    assert_eq!(set.request_timeout, Duration::from_secs(2));
    assert_eq!(set.purge_timeout, Duration::from_secs(5));
    assert!(parse(
        "kind = \"http\"\nurl = \"http://c/{path}\"\nrequest_timeout = \"20s\"\npurge_timeout = \"5s\""
    )
    .is_err());
    assert!(parse("kind = \"http\"\nurl = \"http://c/{path}\"\nrequest_timeout = \"0s\"").is_err());
}

#[test]
fn api_limits_default_to_the_vendors_and_a_third_of_them() {
    let zone = "kind = \"cloudflare\"\nzone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"";
    let api = parse(zone).unwrap().api.unwrap();
    assert_eq!(
        (api.calls, api.per.as_secs(), api.allowed()),
        (1_200, 300, 396)
    );
    let scaled = parse(&format!("{zone}\napi_limit = \"10/20s\"\napi_share = 0.5")).unwrap();
    assert_eq!(scaled.api.unwrap().allowed(), 5);
    let fastly = parse("kind = \"fastly\"\nservice_id = \"SU1Z0isxPaozGVKXdv0eY\"").unwrap();
    assert_eq!(fastly.api.unwrap().per.as_secs(), 3_600);
    for bad in [
        "api_limit = \"1200\"",
        "api_limit = \"0/5m\"",
        "api_share = 0.0",
        "api_share = 1.5",
    ] {
        assert!(parse(&format!("{zone}\n{bad}")).is_err(), "{bad}");
    }
    let http = "kind = \"http\"\nurl = \"http://cache/t/{path}\"";
    assert!(parse(&format!("{http}\napi_share = 0.5"))
        .unwrap_err()
        .contains("only kind"));
    assert_eq!(parse(http).unwrap().api, None);
}

#[test]
fn each_kind_resolves_to_a_target_of_its_own_name() {
    for (kind, keys) in [
        ("http", "url = \"http://cache/t/{path}\""),
        ("cloudfront", "distribution_id = \"E2QWRUHAPOMQZL\""),
        (
            "cloudflare",
            "zone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"",
        ),
        ("fastly", "service_id = \"SU1Z0isxPaozGVKXdv0eY\""),
    ] {
        let parsed = parse(&format!("kind = \"{kind}\"\n{keys}")).unwrap();
        assert_eq!(parsed.target.kind(), kind);
    }
    assert_eq!(
        parse("kind = \"akamai\"").unwrap_err().0,
        "cdn kind `akamai` is not http, cloudfront, cloudflare or fastly"
    );
}

/// Each kind's table with its required keys, and each key only some kinds take with a value of
/// its type and the kinds that take it.
const TABLES: [(&str, &str); 4] = [
    ("http", "url = \"http://cache/t/{path}\""),
    ("cloudfront", "distribution_id = \"E2QWRUHAPOMQZL\""),
    (
        "cloudflare",
        "zone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"",
    ),
    ("fastly", "service_id = \"SU1Z0isxPaozGVKXdv0eY\""),
];
const KIND_ONLY_KEYS: [(&str, &[&str]); 18] = [
    ("url = \"http://cache/t/{path}\"", &["http"]),
    ("method = \"BAN\"", &["http"]),
    ("concurrency = 4", &["http"]),
    ("headers = { \"X-Purge-Key\" = \"PURGE_KEY\" }", &["http"]),
    ("rate_per_connection = 10.0", &["http"]),
    ("distribution_id = \"E2QWRUHAPOMQZL\"", &["cloudfront"]),
    ("path_prefix = \"tiles\"", &["cloudfront"]),
    (
        "zone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"",
        &["cloudflare"],
    ),
    ("prefixes = false", &["cloudflare"]),
    ("plan = \"pro\"", &["cloudflare"]),
    ("service_id = \"SU1Z0isxPaozGVKXdv0eY\"", &["fastly"]),
    ("surrogate_keys = true", &["fastly"]),
    ("soft_purge = true", &["fastly"]),
    ("token_env = \"PURGE_TOKEN\"", &["cloudflare", "fastly"]),
    (
        "api_url = \"https://api.example.org\"",
        &["cloudflare", "fastly"],
    ),
    ("only_this_output = true", &["cloudflare", "fastly"]),
    ("api_limit = \"10/1m\"", &["cloudflare", "fastly"]),
    ("api_share = 0.5", &["cloudflare", "fastly"]),
];

/// The error of a config file holding one `[[cdn]]` table, `text`.
fn resolve_file(text: &str) -> crate::error::Result<Vec<CdnConfig>> {
    let mut tables: std::collections::BTreeMap<String, Vec<Spanned<RawCdn>>> =
        toml::from_str(text).unwrap();
    let raw = tables.remove("cdn").unwrap();
    resolve_cdns(raw, "t", Path::new("cdn.toml"), text)
}

/// A key only other kinds take is refused at its own line, naming the kinds that take it, rather
/// than read and left to do nothing; the kinds that take it take it.
#[test]
fn a_key_of_other_kinds_is_refused_at_its_line_naming_the_kinds_that_take_it() {
    for (key, takers) in KIND_ONLY_KEYS {
        for (kind, required) in TABLES {
            // The key on line 4, the table's header on line 1.
            let text = format!("[[cdn]]\nkind = \"{kind}\"\n{required}\n{key}\n");
            if takers.contains(&kind) {
                if !required.starts_with(key.split(' ').next().unwrap()) {
                    let resolved = resolve_file(&text);
                    assert!(resolved.is_ok(), "{kind} takes {key}: {resolved:?}");
                }
                continue;
            }
            let resolved = resolve_file(&text);
            let Err(Error::Config {
                path,
                line,
                message,
                ..
            }) = resolved
            else {
                panic!("kind = \"{kind}\" took {key}: {resolved:?}");
            };
            assert_eq!(
                (path.as_path(), line),
                (Path::new("cdn.toml"), Some(4)),
                "{kind}: {key}: {message}"
            );
            let name = key.split(' ').next().unwrap();
            let only: Vec<String> = takers.iter().map(|t| format!("kind = \"{t}\"")).collect();
            assert_eq!(
                message,
                format!(
                    "tileset `t`: cdn `{kind}`: {name} is not a key of kind = \"{kind}\": only {} takes it",
                    only.join(" or ")
                ),
            );
        }
    }
}

#[test]
fn the_kinds_that_take_a_key_take_it() {
    let fastly = "kind = \"fastly\"\nservice_id = \"SU1Z0isxPaozGVKXdv0eY\"";
    let cloudflare = "kind = \"cloudflare\"\nzone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"";
    let taken = parse(&format!(
        "{fastly}\nsoft_purge = true\nonly_this_output = true"
    ))
    .unwrap();
    assert!(taken.only_this_output);
    assert!(matches!(
        taken.target,
        CdnTarget::Fastly {
            soft_purge: true,
            ..
        }
    ));
    let taken = parse(&format!(
        "{cloudflare}\nplan = \"pro\"\nonly_this_output = true"
    ))
    .unwrap();
    assert!(taken.only_this_output);
    assert!(matches!(
        taken.target,
        CdnTarget::Cloudflare {
            plan: CloudflarePlan::Pro,
            ..
        }
    ));
    assert!(parse(&format!("{cloudflare}\nurll = \"x\""))
        .unwrap_err()
        .contains("unknown field `urll`"));
}
