//! When a certificate expires: the `notAfter` of an X.509 certificate, read
//! straight from its DER, so `/metrics` can tell an operator weeks ahead.
//!
//! rustls verifies validity but does not hand it out, and a full X.509
//! parser would be a tree of crates for one date. The walk below reads only
//! the fixed path `Certificate -> tbsCertificate -> validity -> notAfter`
//! (RFC 5280, section 4.1) and returns `None` on anything it does not
//! expect: this is a gauge, never a decision, and the file was already
//! accepted by rustls.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0; // [0] EXPLICIT
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The `notAfter` of the first certificate in a PEM file (the leaf of a
/// chain), in Unix seconds.
pub fn pem_not_after(pem: &[u8]) -> Option<i64> {
    let first = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    not_after(&first)
}

/// The `notAfter` of a DER certificate, in Unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // version (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, after) = element(rest)?;
    if tag == VERSION {
        rest = after;
    }
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (tag, validity, _) = element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let not_before_rest = element(validity)?.2;
    let (tag, time, _) = element(not_before_rest)?;
    parse_time(tag, time)
}

/// One DER element: its tag, its contents and what follows it. Definite
/// lengths only (DER has no other), at most four length bytes.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// `UTCTime` (`YYMMDDHHMMSSZ`, years 1950-2049) or `GeneralizedTime`
/// (`YYYYMMDDHHMMSSZ`), the only forms RFC 5280 allows.
fn parse_time(tag: u8, s: &[u8]) -> Option<i64> {
    let (year, rest) = match tag {
        UTC_TIME if s.len() == 13 => {
            let yy = digits(&s[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        GENERALIZED_TIME if s.len() == 15 => (digits(&s[..4])?, &s[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let minute = digits(&rest[6..8])?;
    let second = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn digits(s: &[u8]) -> Option<i64> {
    s.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the well-known
/// era-based conversion: 400-year eras of 146,097 days).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_until(year: i32, month: u8, day: u8) -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(year, month, day);
        params.self_signed(&key).expect("cert")
    }

    #[test]
    fn reads_not_after_in_both_time_forms() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050.
        let utc = cert_until(2031, 3, 15);
        assert_eq!(not_after(utc.der()), Some(1_931_299_200));
        let generalized = cert_until(2051, 1, 1);
        assert_eq!(not_after(generalized.der()), Some(2_556_144_000));
        assert_eq!(pem_not_after(utc.pem().as_bytes()), Some(1_931_299_200));
    }

    #[test]
    fn the_first_certificate_of_a_chain_counts() {
        let chain = format!(
            "{}{}",
            cert_until(2030, 1, 1).pem(),
            cert_until(2040, 1, 1).pem()
        );
        assert_eq!(pem_not_after(chain.as_bytes()), Some(1_893_456_000));
    }

    #[test]
    fn anything_unexpected_is_none_never_a_panic() {
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(&[0x30, 0x82, 0xff]), None);
        assert_eq!(pem_not_after(b"not pem"), None);
        let der = cert_until(2031, 3, 15).der().to_vec();
        for cut in 0..der.len() {
            let _ = not_after(&der[..cut]);
        }
        let mut flipped = der;
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = not_after(&flipped);
            flipped[i] ^= 0xff;
        }
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(parse_time(UTC_TIME, b"500101000000Z"), Some(-631_152_000));
        assert_eq!(parse_time(UTC_TIME, b"500101000000+"), None);
        assert_eq!(parse_time(GENERALIZED_TIME, b"2038011903140Z"), None);
    }
}
