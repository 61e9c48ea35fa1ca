//! The `notAfter` of an X.509 certificate, read from its DER (RFC 5280
//! §4.1: `Certificate → tbsCertificate → validity → notAfter`), so the log
//! and `rusher_tls_certificate_expiry_timestamp_seconds` can say when the
//! served certificate expires. Only the few DER elements on that path are
//! walked; anything unexpected is `None`, never a panic.

/// Seconds since the Unix epoch at which the certificate `der` expires, or
/// `None` when `der` is not a certificate this reader understands.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (certificate, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(certificate, SEQUENCE)?;
    let mut rest = tbs;
    // version [0] EXPLICIT, absent in v1 certificates.
    if rest.first() == Some(&VERSION) {
        rest = element(rest, VERSION)?.1;
    }
    let rest = element(rest, INTEGER)?.1; // serialNumber
    let rest = element(rest, SEQUENCE)?.1; // signature algorithm
    let rest = element(rest, SEQUENCE)?.1; // issuer
    let (validity, _) = element(rest, SEQUENCE)?;
    let not_before_tag = *validity.first()?;
    let after = element(validity, not_before_tag)?.1;
    let tag = *after.first()?;
    let (time, _) = element(after, tag)?;
    match tag {
        UTC_TIME => parse_time(time, false),
        GENERALIZED_TIME => parse_time(time, true),
        _ => None,
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The content of the DER element at the start of `input` if its tag is
/// `tag`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = if len < 0x80 {
        (usize::from(len), rest)
    } else {
        let count = usize::from(len & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// `YYMMDDHHMMSSZ` (UTCTime, 1950–2049) or `YYYYMMDDHHMMSSZ`
/// (GeneralizedTime), the forms RFC 5280 §4.1.2.5 allows, in Unix seconds.
fn parse_time(text: &[u8], four_digit_year: bool) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = if four_digit_year {
        (text.get(..4)?.parse::<i64>().ok()?, text.get(4..)?)
    } else {
        let yy = text.get(..2)?.parse::<i64>().ok()?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
    };
    if rest.len() != 10 {
        return None;
    }
    let field = |at: usize| rest.get(at..at + 2)?.parse::<i64>().ok();
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian
/// calendar (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn dates_convert_to_unix_seconds() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(parse_time(b"000229000000Z", false), Some(951_782_400));
        assert_eq!(parse_time(b"491231235959Z", false), Some(2_524_607_999));
        assert_eq!(parse_time(b"21261105203113Z", true), Some(4_949_584_273));
        assert_eq!(parse_time(b"500101000000Z", false), Some(-631_152_000));
        for bad in [
            &b"0013010000Z"[..],
            b"001301000000Z",
            b"000101000000",
            b"00010100000aZ",
        ] {
            assert_eq!(parse_time(bad, false), None, "{bad:?}");
        }
    }

    #[test]
    fn the_fixture_certificate_expires_in_2126() {
        let path = format!("{}/fixtures/tls/cert.pem", env!("CARGO_MANIFEST_DIR"));
        let cert = CertificateDer::from_pem_file(path).unwrap();
        // `openssl x509 -enddate`: notAfter=Nov  5 20:31:13 2126 GMT
        assert_eq!(not_after(&cert), Some(4_949_584_273));
    }

    #[test]
    fn truncated_or_foreign_der_gives_none() {
        let path = format!("{}/fixtures/tls/cert.pem", env!("CARGO_MANIFEST_DIR"));
        let cert = CertificateDer::from_pem_file(path).unwrap();
        for len in 0..cert.len() {
            let _ = not_after(&cert[..len]);
        }
        assert_eq!(not_after(&cert[..40]), None);
        assert_eq!(not_after(b"\x02\x01\x00"), None);
        assert_eq!(not_after(b"\x30\x84\xff\xff\xff\xff"), None);
    }
}
