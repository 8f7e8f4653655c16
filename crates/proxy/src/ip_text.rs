//! A client's IP address as text, for `X-Forwarded-For`: written by hand
//! (std's formatting machinery cost some 1,650 instructions a request when
//! a connection stopped holding its peer's text), and the last one each
//! thread wrote kept as a header value, so the requests of a kept-alive
//! connection clone it instead of writing it again.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use http::HeaderValue;

/// Room for the longest address: eight groups of four hex digits and
/// seven colons.
pub const MAX_LEN: usize = 39;

thread_local! {
    static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// `ip` (an IPv4-mapped IPv6 address as IPv4) as a header value.
pub fn header_value(ip: IpAddr) -> HeaderValue {
    let ip = ip.to_canonical();
    let cached = LAST.try_with(|last| {
        if let Some((seen, value)) = &*last.borrow()
            && *seen == ip
        {
            return Some(value.clone());
        }
        None
    });
    if let Ok(Some(value)) = cached {
        return value;
    }
    let mut text = [0; MAX_LEN];
    let len = write(ip, &mut text);
    let value = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&text[..len]))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let _ = LAST.try_with(|last| *last.borrow_mut() = Some((ip, value.clone())));
    value
}

/// Writes `ip` as `Display` does (RFC 5952 for IPv6; an IPv4-mapped
/// address is written as IPv6, so map it first if it should not be) and
/// returns the length.
pub fn write(ip: IpAddr, out: &mut [u8; MAX_LEN]) -> usize {
    match ip {
        IpAddr::V4(v4) => write_v4(v4, out, 0),
        IpAddr::V6(v6) => write_v6(v6, out),
    }
}

fn write_v4(ip: Ipv4Addr, out: &mut [u8; MAX_LEN], mut at: usize) -> usize {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[at] = b'.';
            at += 1;
        }
        if octet >= 100 {
            out[at] = b'0' + octet / 100;
            at += 1;
        }
        if octet >= 10 {
            out[at] = b'0' + octet / 10 % 10;
            at += 1;
        }
        out[at] = b'0' + octet % 10;
        at += 1;
    }
    at
}

fn write_v6(ip: Ipv6Addr, out: &mut [u8; MAX_LEN]) -> usize {
    if let Some(v4) = ip.to_ipv4_mapped() {
        out[..7].copy_from_slice(b"::ffff:");
        return write_v4(v4, out, 7);
    }
    let groups = ip.segments();
    // The longest run of two or more zero groups (the first of equals)
    // becomes `::`.
    let (mut best, mut best_len, mut run, mut run_len) = (0, 0, 0, 0);
    for (i, &g) in groups.iter().enumerate() {
        if g == 0 {
            if run_len == 0 {
                run = i;
            }
            run_len += 1;
            if run_len > best_len {
                (best, best_len) = (run, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    if best_len < 2 {
        best_len = 0;
    }
    let mut at = 0;
    let mut i = 0;
    while i < 8 {
        if best_len > 0 && i == best {
            out[at] = b':';
            out[at + 1] = b':';
            at += 2;
            i += best_len;
            continue;
        }
        if i > 0 && !(best_len > 0 && i == best + best_len) {
            out[at] = b':';
            at += 1;
        }
        at = write_hex(groups[i], out, at);
        i += 1;
    }
    at
}

fn write_hex(group: u16, out: &mut [u8; MAX_LEN], mut at: usize) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut started = false;
    for shift in [12, 8, 4, 0] {
        let d = (group >> shift) & 0xf;
        if d != 0 || started || shift == 0 {
            out[at] = DIGITS[usize::from(d)];
            at += 1;
            started = true;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(ip: IpAddr) -> String {
        let mut out = [0; MAX_LEN];
        let len = write(ip, &mut out);
        String::from_utf8(out[..len].to_vec()).expect("ascii")
    }

    #[test]
    fn written_as_display_writes() {
        for s in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.200.3.45",
            "::",
            "::1",
            "1::",
            "2001:db8::5",
            "2001:db8:0:0:1:0:0:1",
            "2001:0:0:1:0:0:0:1",
            "1:0:1:0:1:0:1:0",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "fe80::1:2:3:4",
        ] {
            let ip: IpAddr = s.parse().expect("ip");
            assert_eq!(text(ip), ip.to_string(), "{s}");
        }
    }

    #[test]
    fn a_mapped_address_becomes_ipv4_in_the_header() {
        let ip: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(header_value(ip), "192.0.2.7");
        assert_eq!(
            header_value("2001:db8::1".parse().expect("ip")),
            "2001:db8::1"
        );
        assert_eq!(
            header_value(ip),
            "192.0.2.7",
            "the cache follows the address"
        );
    }

    proptest! {
        #[test]
        fn any_address_as_display(bits: u128, v4: u32, zeros: u8) {
            // Zero some groups, so runs of zeros are common.
            let mut groups = Ipv6Addr::from(bits).segments();
            for (i, g) in groups.iter_mut().enumerate() {
                if zeros & (1 << i) != 0 {
                    *g = 0;
                }
            }
            let v6 = IpAddr::V6(Ipv6Addr::from(groups));
            prop_assert_eq!(text(v6), v6.to_string());
            let v4 = IpAddr::V4(Ipv4Addr::from(v4));
            prop_assert_eq!(text(v4), v4.to_string());
        }
    }
}
