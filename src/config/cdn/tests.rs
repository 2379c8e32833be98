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

/// A key only other kinds take is refused, naming the kinds that take it, rather than read and
/// left to do nothing; the kinds that take it take it.
#[test]
fn a_key_of_other_kinds_is_refused_naming_the_kinds_that_take_it() {
    let http = "kind = \"http\"\nurl = \"http://cache/t/{path}\"";
    let fastly = "kind = \"fastly\"\nservice_id = \"SU1Z0isxPaozGVKXdv0eY\"";
    let cloudflare = "kind = \"cloudflare\"\nzone_id = \"023e105f4ecef8ad9ca31a8372d0c353\"";
    for (table, key, message) in [
        (
            http,
            "soft_purge = true",
            "cdn `http`: soft_purge is Fastly's: only kind = \"fastly\" takes it",
        ),
        (
            http,
            "only_this_output = true",
            "cdn `http`: only_this_output is Cloudflare's and Fastly's (a zone or service purged \
             whole): only kind = \"cloudflare\" or \"fastly\" takes it",
        ),
        (
            fastly,
            "plan = \"pro\"",
            "cdn `fastly`: plan is Cloudflare's: only kind = \"cloudflare\" takes it",
        ),
    ] {
        assert_eq!(parse(&format!("{table}\n{key}")).unwrap_err().0, message);
    }
    for taken in [
        format!("{fastly}\nsoft_purge = true\nonly_this_output = true"),
        format!("{cloudflare}\nplan = \"pro\"\nonly_this_output = true"),
    ] {
        assert!(parse(&taken).is_ok(), "{taken}");
    }
}
