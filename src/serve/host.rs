//! Which `Host` a request may name. A web page on any site can make a browser send requests to a
//! local port under the page's own domain name (DNS rebinding: the name is made to resolve to
//! 127.0.0.1), and then read the answers, such as `/index.json` with the outputs' local paths. Such
//! a request names a host the operator never chose; the server answers only the names it is
//! reached by: its listening address, `localhost` on its port, and the names given with
//! `--public-host`.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::uri::Authority;

/// A name the server may be reached by besides its address and `localhost` (`--public-host`):
/// `NAME` allows it on any port, `NAME:PORT` on that port only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicHost {
    name: String,
    port: Option<u16>,
}

impl FromStr for PublicHost {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, port) = split(text).ok_or_else(|| {
            format!(
                "`{text}` is not a host name: expected NAME or NAME:PORT, as in tiles.example.org"
            )
        })?;
        Ok(PublicHost { name, port })
    }
}

/// The hosts a server answers.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    listen: SocketAddr,
    public: Vec<PublicHost>,
}

impl AllowedHosts {
    /// The hosts of a server listening on `listen`, with the operator's public names.
    pub fn new(listen: SocketAddr, public: &[PublicHost]) -> AllowedHosts {
        AllowedHosts {
            listen,
            public: public.to_vec(),
        }
    }

    /// Whether a request whose `Host` header is `host` is answered.
    pub fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split(host) else {
            return false;
        };
        // A Host without a port names the scheme's default.
        let effective = port.unwrap_or(80);
        let ours = effective == self.listen.port();
        let literal = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(&name)
            .parse::<IpAddr>();
        match literal {
            // An address cannot be rebound to another site: the listening one, or any when the
            // server listens on every interface (the one a browser used is then unknown here).
            Ok(ip) => ours && (ip == self.listen.ip() || self.listen.ip().is_unspecified()),
            Err(_) if name == "localhost" => ours,
            Err(_) => self.public.iter().any(|public| {
                public.name == name && public.port.is_none_or(|port| port == effective)
            }),
        }
    }
}

/// Whether `text` is a plain `host[:port]`, as a `Host` header must be.
pub fn is_host(text: &str) -> bool {
    split(text).is_some()
}

/// A host header or name as its lower-case name (without a final dot) and port; `None` for
/// anything but `host[:port]` (user information, a path, spaces).
fn split(text: &str) -> Option<(String, Option<u16>)> {
    let authority = text.parse::<Authority>().ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let name = authority.host().trim_end_matches('.').to_ascii_lowercase();
    Some((name, authority.port_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listen: &str, public: &[&str]) -> AllowedHosts {
        let public: Vec<PublicHost> = public.iter().map(|p| p.parse().unwrap()).collect();
        AllowedHosts::new(listen.parse().unwrap(), &public)
    }

    #[test]
    fn the_listening_address_localhost_and_public_names_only() {
        let local = hosts(
            "127.0.0.1:8080",
            &["tiles.example.org", "proxy.example:8443"],
        );
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LocalHost:8080",
            "tiles.example.org",
            "tiles.example.org:9000",
            "Tiles.Example.Org.",
            "proxy.example:8443",
        ] {
            assert!(local.allows(host), "{host}");
        }
        for host in [
            "127.0.0.1",
            "localhost",
            "127.0.0.2:8080",
            "[::1]:8080",
            "rebind.attacker.example:8080",
            "proxy.example:8080",
            "proxy.example",
            "user@localhost:8080",
            "",
            "local host:8080",
        ] {
            assert!(!local.allows(host), "{host}");
        }
        assert!(hosts("127.0.0.1:80", &[]).allows("127.0.0.1"));
        assert!(hosts("127.0.0.1:80", &[]).allows("localhost"));
        let v6 = hosts("[::1]:8080", &[]);
        assert!(v6.allows("[::1]:8080") && !v6.allows("127.0.0.1:8080"));
        let everywhere = hosts("0.0.0.0:8080", &[]);
        assert!(everywhere.allows("192.0.2.7:8080") && !everywhere.allows("lan-name:8080"));
    }

    #[test]
    fn public_names_are_plain_host_names() {
        assert!("tiles.example.org:8443".parse::<PublicHost>().is_ok());
        for bad in [
            "",
            "user@tiles.example.org",
            "tiles.example.org/path",
            "a b",
        ] {
            assert!(bad.parse::<PublicHost>().is_err(), "{bad}");
        }
    }
}
