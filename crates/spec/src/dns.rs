//! Authoritative DNS zones of a spec (`dns: { zones: [...] }`): checking and
//! canonicalizing zone names, record names and record values.
//!
//! A zone's name is a lowercase host without a trailing dot (never a wildcard). A record's
//! name is relative to its zone: `@` for the apex, `www`, `a.b`, `_sip._tcp`, or a
//! wildcard `*`/`*.x` (lowercase; [`full_name`] makes it absolute). A record's value is
//! kept in its canonical zone-file text ([`canonical_value`]): addresses in their
//! standard display form, domain names absolute (lowercase, trailing dot), numbers
//! single-space separated, a CAA value in double quotes, TXT text as given. What
//! involves the rest of the stack (duplicate and nested zones, CNAME conflicts, names
//! the routes own) is checked in `validate.rs`.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::model::{RecordType, MAX_ZONE_TTL};
use crate::names::{domain_problem, MAX_HOST_LEN, MAX_LABEL_LEN};
use crate::suggest::suggestion_suffix;

/// Longest TXT value, in bytes.
pub const MAX_TXT_BYTES: usize = 4000;

/// The tags a CAA record may have.
pub const CAA_TAGS: [&str; 3] = ["issue", "issuewild", "iodef"];

/// How a record name may be written, for messages.
const NAME_FORMS: &str =
    "write `\"@\"` for the zone's apex, or a name relative to the zone such as `www`, `_sip._tcp` or `*.dev`";

/// The absolute name (lowercase, no trailing dot) of record `name` in zone `zone`: `@` is
/// the zone's apex.
pub fn full_name(zone: &str, name: &str) -> String {
    if name == "@" {
        zone.to_string()
    } else {
        format!("{name}.{zone}")
    }
}

/// Why `name` (normalised: lowercase, no trailing dot) cannot name a zone.
pub(crate) fn zone_name_problem(name: &str) -> Option<String> {
    if let Some(apex) = name.strip_prefix("*.") {
        return Some(format!(
            "a zone name cannot be a wildcard: name the zone `{}` and give it a record named `*`",
            apex.escape_debug()
        ));
    }
    if name.contains('*') {
        return Some(format!(
            "invalid zone name `{}`: a zone name cannot hold a wildcard; give the zone's apex, e.g. `example.com`, and wildcard records in it, e.g. `name: \"*.dev\"`",
            name.escape_debug()
        ));
    }
    domain_problem("zone name", "`example.com`", name)
}

/// Why `ttl` (seconds) is not a zone's or a record's TTL.
pub(crate) fn ttl_problem(ttl: u32) -> Option<String> {
    (!(1..=MAX_ZONE_TTL).contains(&ttl)).then(|| ttl_range_message(ttl))
}

/// The TTL range, for an out-of-range value `found`.
pub(crate) fn ttl_range_message(found: impl std::fmt::Display) -> String {
    format!("ttl must be between 1 and {MAX_ZONE_TTL} seconds (1 day), found {found}")
}

/// `name` (absolute, no trailing dot) relative to `zone`, if it is in it: `@` for the
/// apex.
fn relative_to(zone: &str, name: &str) -> Option<String> {
    if zone.is_empty() {
        return None;
    }
    if name == zone {
        return Some("@".to_string());
    }
    name.strip_suffix(zone)?.strip_suffix('.').filter(|r| !r.is_empty()).map(str::to_string)
}

/// Why `name` cannot be the name of a record of zone `zone`.
pub(crate) fn record_name_problem(zone: &str, name: &str) -> Option<String> {
    if name == "@" {
        return None;
    }
    let shown = name.escape_debug();
    if name.is_empty() {
        return Some(format!("record name is empty: {NAME_FORMS}"));
    }
    if let Some(absolute) = name.strip_suffix('.') {
        return Some(match relative_to(zone, absolute) {
            Some(rel) => format!(
                "record name `{shown}` ends with `.`, but record names are relative to zone `{zone}`: write `{rel}`"
            ),
            None => format!(
                "record name `{shown}` ends with `.`, but record names are relative to zone `{zone}` (`www` means `www.{zone}`): {NAME_FORMS}"
            ),
        });
    }
    match relative_to(zone, name).as_deref() {
        Some("@") => {
            return Some(format!(
                "record name `{shown}` is the zone's own name: write `\"@\"` for the apex (record names are relative to zone `{zone}`)"
            ))
        }
        Some(rel) => {
            return Some(format!(
                "record name `{shown}` repeats the zone's name: record names are relative to zone `{zone}`, so write `{rel}`"
            ))
        }
        None => {}
    }
    for (i, label) in name.split('.').enumerate() {
        if label == "*" && i == 0 {
            continue;
        }
        let why = if label.contains('*') {
            "a wildcard `*` is only allowed as the whole first label, as in `*` or `*.dev`".to_string()
        } else if label.is_empty() {
            "it has an empty label".to_string()
        } else if label.len() > MAX_LABEL_LEN {
            format!("a label is at most {MAX_LABEL_LEN} characters, `{}` has {}", label.escape_debug(), label.len())
        } else if label.bytes().any(|b| b.is_ascii_uppercase()) {
            "record names are lowercase".to_string()
        } else if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            "each label is lowercase letters, digits, '-' and '_'".to_string()
        } else {
            continue;
        };
        return Some(format!("invalid record name `{shown}`: {why}; {NAME_FORMS}"));
    }
    let full = full_name(zone, name);
    if full.len() > MAX_HOST_LEN {
        return Some(format!(
            "record name `{shown}` is too long: with zone `{zone}` its full name has {} characters, at most {MAX_HOST_LEN} are allowed",
            full.len()
        ));
    }
    None
}

/// `s` for a message: escaped, and shortened past 60 characters.
fn shown(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.escape_debug().to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{}…", head.escape_debug())
    }
}

/// True for text that is an IP address.
fn is_address(s: &str) -> bool {
    s.parse::<Ipv4Addr>().is_ok() || s.parse::<Ipv6Addr>().is_ok()
}

/// A domain name in a record's value made absolute (lowercase, trailing dot), or why it
/// is not one. It must have at least two labels: a value is never relative to the zone.
fn absolute_domain(zone: &str, text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let bare = lower.strip_suffix('.').unwrap_or(&lower);
    let shown = shown(text);
    if bare.is_empty() {
        return Err("the name is empty".to_string());
    }
    if is_address(bare) {
        return Err(format!("`{shown}` is an address, not a name"));
    }
    let labels_ok = bare.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= MAX_LABEL_LEN
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    });
    if !labels_ok {
        return Err(format!(
            "`{shown}` is not a domain name (dot-separated labels of letters, digits, '-' and '_', each at most {MAX_LABEL_LEN})"
        ));
    }
    if bare.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("`{shown}` is not a domain name (its last label is a number)"));
    }
    if bare.len() > MAX_HOST_LEN {
        return Err(format!("the name is longer than {MAX_HOST_LEN} characters"));
    }
    if !bare.contains('.') {
        let zone = if zone.is_empty() { "example.com" } else { zone };
        return Err(format!("`{shown}` is a single label: give the full name, e.g. `{bare}.{zone}`"));
    }
    Ok(format!("{bare}."))
}

/// A number of a record's value, or why not.
fn number<T: std::str::FromStr>(text: &str, what: &str, range: &str) -> Result<T, String> {
    text.parse::<T>().map_err(|_| format!("the {what} `{}` must be a number from {range}", shown(text)))
}

/// What a record of type `rtype` holds, with an example.
fn needs(rtype: RecordType) -> String {
    match rtype {
        RecordType::A => "an A record needs an IPv4 address, e.g. `192.0.2.1`".to_string(),
        RecordType::Aaaa => "an AAAA record needs an IPv6 address, e.g. `2001:db8::1`".to_string(),
        RecordType::Cname => "a CNAME record needs the name it is an alias of, e.g. `shop.example.net`".to_string(),
        RecordType::Mx => "an MX record needs `<preference> <mail server>`, e.g. `10 mail.example.net`".to_string(),
        RecordType::Txt => {
            format!("a TXT record holds up to {MAX_TXT_BYTES} bytes of printable ASCII text and spaces, e.g. `v=spf1 mx -all`")
        }
        RecordType::Srv => "an SRV record needs `<priority> <weight> <port> <target>`, e.g. `10 5 5060 sip.example.net` (numbers 0-65535; target `.` for none)".to_string(),
        RecordType::Caa => "a CAA record needs `<flags> <tag> <value>` with tag issue, issuewild or iodef, e.g. `0 issue \"letsencrypt.org\"`".to_string(),
    }
}

/// The canonical text of a record's value (`value` as written in the spec or as
/// canonical already), or a message saying what the type needs, with an example.
///
/// Canonical forms: A and AAAA in their standard display form (`2001:db8::1`); CNAME an
/// absolute name (`shop.example.net.`); MX `10 mail.example.net.` (`0 .`: no mail);
/// SRV `10 5 5060 sip.example.net.` (target `.`: no service); CAA
/// `0 issue "letsencrypt.org"`; TXT as given. Names are lowercased. Applying it to its
/// own result gives the same text.
pub fn canonical_value(zone: &str, rtype: RecordType, value: &str) -> Result<String, String> {
    let why = |reason: String| {
        let sep = if reason.is_empty() { "" } else { ": " };
        format!("{}, found `{}`{sep}{reason}", needs(rtype), shown(value))
    };
    let fail = |reason: String| Err(why(reason));
    let v = value.trim();
    match rtype {
        RecordType::A => match v.parse::<Ipv4Addr>() {
            Ok(a) => Ok(a.to_string()),
            Err(_) if v.parse::<Ipv6Addr>().is_ok() => fail("that is an IPv6 address, use type AAAA".to_string()),
            Err(_) if absolute_domain(zone, v).is_ok() => {
                fail("that is a name; for an alias of another name use type CNAME".to_string())
            }
            Err(_) => fail(String::new()),
        },
        RecordType::Aaaa => match v.parse::<Ipv6Addr>() {
            Ok(a) => Ok(a.to_string()),
            Err(_) if v.parse::<Ipv4Addr>().is_ok() => fail("that is an IPv4 address, use type A".to_string()),
            Err(_) if absolute_domain(zone, v).is_ok() => {
                fail("that is a name; for an alias of another name use type CNAME".to_string())
            }
            Err(_) => fail(String::new()),
        },
        RecordType::Cname => {
            if is_address(v) {
                return fail("that is an address, use type A or AAAA".to_string());
            }
            if v.split_whitespace().count() > 1 {
                return fail("a CNAME holds one name".to_string());
            }
            absolute_domain(zone, v).map_err(why)
        }
        RecordType::Mx => {
            let parts: Vec<&str> = v.split_whitespace().collect();
            let [preference, host] = parts[..] else { return fail(String::new()) };
            let preference: u16 = number(preference, "preference", "0 to 65535").map_err(why)?;
            let host = if host == "." { ".".to_string() } else { absolute_domain(zone, host).map_err(why)? };
            Ok(format!("{preference} {host}"))
        }
        RecordType::Txt => {
            if value.len() > MAX_TXT_BYTES {
                return Err(format!("{}, found {} bytes", needs(rtype), value.len()));
            }
            match value.chars().find(|c| !(' '..='~').contains(c)) {
                Some(c) => fail(format!("`{}` is not printable ASCII", c.escape_debug())),
                None => Ok(value.to_string()),
            }
        }
        RecordType::Srv => {
            let parts: Vec<&str> = v.split_whitespace().collect();
            let [priority, weight, port, target] = parts[..] else { return fail(String::new()) };
            let priority: u16 = number(priority, "priority", "0 to 65535").map_err(why)?;
            let weight: u16 = number(weight, "weight", "0 to 65535").map_err(why)?;
            let port: u16 = number(port, "port", "0 to 65535").map_err(why)?;
            let target = if target == "." { ".".to_string() } else { absolute_domain(zone, target).map_err(why)? };
            Ok(format!("{priority} {weight} {port} {target}"))
        }
        RecordType::Caa => {
            let mut split = v.splitn(2, char::is_whitespace);
            let flags = split.next().unwrap_or_default();
            let rest = split.next().unwrap_or_default().trim_start();
            let mut split = rest.splitn(2, char::is_whitespace);
            let tag = split.next().unwrap_or_default();
            let data = split.next().unwrap_or_default().trim();
            if flags.is_empty() || tag.is_empty() || data.is_empty() {
                return fail(String::new());
            }
            let flags: u8 = number(flags, "flags", "0 to 255").map_err(why)?;
            let tag_lower = tag.to_ascii_lowercase();
            if !CAA_TAGS.contains(&tag_lower.as_str()) {
                return fail(format!(
                    "unknown tag `{}`{}",
                    shown(tag),
                    suggestion_suffix(&tag_lower, CAA_TAGS.iter().copied())
                ));
            }
            let inner = match data.strip_prefix('"') {
                Some(quoted) => match quoted.strip_suffix('"') {
                    Some(inner) => inner,
                    None => return fail("the value's closing `\"` is missing".to_string()),
                },
                None => data,
            };
            if inner.contains('"') {
                return fail("the value cannot contain `\"`".to_string());
            }
            if let Some(c) = inner.chars().find(|c| !(' '..='~').contains(c)) {
                return fail(format!("`{}` is not printable ASCII", c.escape_debug()));
            }
            if tag_lower == "iodef" {
                if !["mailto:", "https://", "http://"].iter().any(|p| inner.starts_with(p)) {
                    return fail(
                        "an iodef value is a `mailto:`, `https://` or `http://` URL, e.g. `\"mailto:security@example.com\"`"
                            .to_string(),
                    );
                }
            } else {
                // `issue`/`issuewild`: a CA's domain, then optional `; key=value` parameters;
                // no domain (`";"`) lets no CA issue.
                let domain = inner.split(';').next().unwrap_or_default().trim();
                if !domain.is_empty() {
                    if let Err(why) = absolute_domain(zone, domain) {
                        return fail(format!(
                            "an {tag_lower} value is a certificate authority's domain, e.g. `\"letsencrypt.org\"`, or `\";\"` for none: {why}"
                        ));
                    }
                }
            }
            Ok(format!("{flags} {tag_lower} \"{inner}\""))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(rtype: RecordType, value: &str, expected: &str) {
        let got = canonical_value("example.com", rtype, value);
        assert_eq!(got.as_deref(), Ok(expected), "{rtype} {value:?}");
        // Canonical text is a fixed point.
        assert_eq!(canonical_value("example.com", rtype, expected).as_deref(), Ok(expected), "{rtype} {expected:?}");
    }

    fn err(rtype: RecordType, value: &str) -> String {
        match canonical_value("example.com", rtype, value) {
            Ok(v) => panic!("{rtype} {value:?} accepted as {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn canonical_values() {
        ok(RecordType::A, " 192.0.2.1 ", "192.0.2.1");
        ok(RecordType::Aaaa, "2001:DB8:0:0:0:0:0:1", "2001:db8::1");
        ok(RecordType::Aaaa, "::ffff:192.0.2.1", "::ffff:192.0.2.1");
        ok(RecordType::Cname, "Shop.Example.NET", "shop.example.net.");
        ok(RecordType::Cname, "_acme.example.net.", "_acme.example.net.");
        ok(RecordType::Mx, "10   mail.example.net", "10 mail.example.net.");
        ok(RecordType::Mx, "0 .", "0 .");
        ok(RecordType::Txt, "v=spf1 mx -all", "v=spf1 mx -all");
        ok(RecordType::Txt, " spaced \"quoted\" ", " spaced \"quoted\" ");
        ok(RecordType::Txt, "", "");
        ok(RecordType::Srv, "10 5 5060 sip.example.net", "10 5 5060 sip.example.net.");
        ok(RecordType::Srv, "0 0 0 .", "0 0 0 .");
        ok(RecordType::Caa, "0 issue letsencrypt.org", "0 issue \"letsencrypt.org\"");
        ok(
            RecordType::Caa,
            "128 ISSUEWILD \"letsencrypt.org; validationmethods=dns-01\"",
            "128 issuewild \"letsencrypt.org; validationmethods=dns-01\"",
        );
        ok(RecordType::Caa, "0 issue \";\"", "0 issue \";\"");
        ok(RecordType::Caa, "0 iodef \"mailto:security@example.com\"", "0 iodef \"mailto:security@example.com\"");
    }

    #[test]
    fn wrong_values_say_what_the_type_needs() {
        assert_eq!(
            err(RecordType::A, "mail.example.net"),
            "an A record needs an IPv4 address, e.g. `192.0.2.1`, found `mail.example.net`: that is a name; for an alias of another name use type CNAME"
        );
        assert_eq!(
            err(RecordType::A, "2001:db8::1"),
            "an A record needs an IPv4 address, e.g. `192.0.2.1`, found `2001:db8::1`: that is an IPv6 address, use type AAAA"
        );
        assert_eq!(
            err(RecordType::A, "192.0.2.01"),
            "an A record needs an IPv4 address, e.g. `192.0.2.1`, found `192.0.2.01`"
        );
        assert_eq!(
            err(RecordType::Aaaa, "192.0.2.1"),
            "an AAAA record needs an IPv6 address, e.g. `2001:db8::1`, found `192.0.2.1`: that is an IPv4 address, use type A"
        );
        assert_eq!(
            err(RecordType::Cname, "shop"),
            "a CNAME record needs the name it is an alias of, e.g. `shop.example.net`, found `shop`: `shop` is a single label: give the full name, e.g. `shop.example.com`"
        );
        assert_eq!(
            err(RecordType::Cname, "192.0.2.1"),
            "a CNAME record needs the name it is an alias of, e.g. `shop.example.net`, found `192.0.2.1`: that is an address, use type A or AAAA"
        );
        assert_eq!(
            err(RecordType::Mx, "10"),
            "an MX record needs `<preference> <mail server>`, e.g. `10 mail.example.net`, found `10`"
        );
        assert_eq!(
            err(RecordType::Mx, "high mail.example.net"),
            "an MX record needs `<preference> <mail server>`, e.g. `10 mail.example.net`, found `high mail.example.net`: the preference `high` must be a number from 0 to 65535"
        );
        assert_eq!(
            err(RecordType::Mx, "10 192.0.2.1"),
            "an MX record needs `<preference> <mail server>`, e.g. `10 mail.example.net`, found `10 192.0.2.1`: `192.0.2.1` is an address, not a name"
        );
        assert_eq!(
            err(RecordType::Txt, "tab\there"),
            "a TXT record holds up to 4000 bytes of printable ASCII text and spaces, e.g. `v=spf1 mx -all`, found `tab\\there`: `\\t` is not printable ASCII"
        );
        assert_eq!(
            err(RecordType::Txt, &"x".repeat(4001)),
            "a TXT record holds up to 4000 bytes of printable ASCII text and spaces, e.g. `v=spf1 mx -all`, found 4001 bytes"
        );
        assert_eq!(
            err(RecordType::Srv, "10 5 70000 sip.example.net"),
            "an SRV record needs `<priority> <weight> <port> <target>`, e.g. `10 5 5060 sip.example.net` (numbers 0-65535; target `.` for none), found `10 5 70000 sip.example.net`: the port `70000` must be a number from 0 to 65535"
        );
        assert_eq!(
            err(RecordType::Caa, "0 issues letsencrypt.org"),
            "a CAA record needs `<flags> <tag> <value>` with tag issue, issuewild or iodef, e.g. `0 issue \"letsencrypt.org\"`, found `0 issues letsencrypt.org`: unknown tag `issues`, did you mean `issue`?"
        );
        assert_eq!(
            err(RecordType::Caa, "0 iodef security@example.com"),
            "a CAA record needs `<flags> <tag> <value>` with tag issue, issuewild or iodef, e.g. `0 issue \"letsencrypt.org\"`, found `0 iodef security@example.com`: an iodef value is a `mailto:`, `https://` or `http://` URL, e.g. `\"mailto:security@example.com\"`"
        );
        assert!(err(RecordType::Caa, "0 issue").ends_with("found `0 issue`"));
        assert!(err(RecordType::Caa, "256 issue letsencrypt.org")
            .ends_with("the flags `256` must be a number from 0 to 255"));
        assert!(err(RecordType::Caa, "0 issue \"letsencrypt.org").ends_with("the value's closing `\"` is missing"));
    }

    #[test]
    fn record_names() {
        for ok in ["@", "www", "a.b", "_sip._tcp", "*", "*.dev", "x-1", &"a".repeat(63)] {
            assert_eq!(record_name_problem("example.com", ok), None, "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.*", "w*", "WWW", "a b", "*.*", &"a".repeat(64)] {
            assert!(record_name_problem("example.com", bad).is_some(), "{bad:?}");
        }
        assert_eq!(
            record_name_problem("example.com", "www.example.com.").as_deref(),
            Some("record name `www.example.com.` ends with `.`, but record names are relative to zone `example.com`: write `www`")
        );
        assert_eq!(
            record_name_problem("example.com", "example.com.").as_deref(),
            Some("record name `example.com.` ends with `.`, but record names are relative to zone `example.com`: write `@`")
        );
        assert_eq!(
            record_name_problem("example.com", "www.example.com").as_deref(),
            Some("record name `www.example.com` repeats the zone's name: record names are relative to zone `example.com`, so write `www`")
        );
        assert_eq!(
            record_name_problem("example.com", "a.*").as_deref(),
            Some("invalid record name `a.*`: a wildcard `*` is only allowed as the whole first label, as in `*` or `*.dev`; write `\"@\"` for the zone's apex, or a name relative to the zone such as `www`, `_sip._tcp` or `*.dev`")
        );
        let long = ["a".repeat(60), "b".repeat(60), "c".repeat(60), "d".repeat(60)].join(".");
        assert!(record_name_problem("example.com", &long).is_some_and(|m| m.contains("has 255 characters")));
        assert_eq!(full_name("example.com", "@"), "example.com");
        assert_eq!(full_name("example.com", "*.dev"), "*.dev.example.com");
    }

    #[test]
    fn zone_names_and_ttls() {
        assert_eq!(zone_name_problem("example.com"), None);
        assert_eq!(
            zone_name_problem("*.example.com").as_deref(),
            Some("a zone name cannot be a wildcard: name the zone `example.com` and give it a record named `*`")
        );
        assert_eq!(
            zone_name_problem("exa_mple.com").as_deref(),
            Some("invalid zone name `exa_mple.com`; a zone name is dot-separated labels of lowercase letters, digits and '-' (e.g. `example.com`)")
        );
        assert!(zone_name_problem("a.*.example.com").is_some_and(|m| m.contains("cannot hold a wildcard")));
        assert!(zone_name_problem("").is_some_and(|m| m.starts_with("zone name is empty")));
        assert_eq!(ttl_problem(1), None);
        assert_eq!(ttl_problem(MAX_ZONE_TTL), None);
        assert_eq!(ttl_problem(0).as_deref(), Some("ttl must be between 1 and 86400 seconds (1 day), found 0"));
        assert!(ttl_problem(MAX_ZONE_TTL + 1).is_some());
    }
}
