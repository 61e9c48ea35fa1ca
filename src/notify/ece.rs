//! Web Push message encryption: RFC 8291 (key derivation from the
//! subscription's P-256 key and auth secret) over the `aes128gcm` content
//! coding of RFC 8188, one record per message.
//!
//! A message body is `salt (16) | rs (u32 BE) | idlen (1) = 65 | keyid =
//! the sender's ephemeral public key (65, uncompressed) | AES-128-GCM(
//! plaintext | 0x02)` (the 0x02 delimiter marks the last record, no
//! padding). A fresh ephemeral key pair and salt are drawn per message
//! (RFC 8291 §3.1); [`encrypt_with`] takes them as arguments so the tests
//! can replay the worked example of RFC 8291 §5.

use aes_gcm::aead::Aead;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// Bytes of the salt in the header.
pub const SALT_LEN: usize = 16;
/// Bytes of the header: salt, record size, key id length, key id.
pub const HEADER_LEN: usize = SALT_LEN + 4 + 1 + PUBLIC_KEY_LEN;
/// Bytes of an uncompressed P-256 point (`0x04 | x | y`).
pub const PUBLIC_KEY_LEN: usize = 65;
/// Bytes of a subscription's auth secret (RFC 8291 §3.2).
pub const AUTH_SECRET_LEN: usize = 16;
/// Bytes of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// The record size put in the header, and the most bytes of body a push
/// service must accept (RFC 8030 §7.2, RFC 8291 §4).
pub const RECORD_SIZE: u32 = 4096;
/// Most bytes of plaintext one message carries: 4096 less the header, the
/// tag and the 1-byte delimiter (RFC 8291 §4: 3993).
pub const MAX_PLAINTEXT_LEN: usize = RECORD_SIZE as usize - HEADER_LEN - TAG_LEN - 1;

/// Why a message could not be encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EceError {
    /// The plaintext does not fit in one 4096-byte body.
    #[error("payload of {0} bytes is over the {MAX_PLAINTEXT_LEN}-byte limit of one Web Push record (RFC 8291 §4)")]
    TooBig(usize),
    /// The AEAD refused (cannot happen with these sizes; kept as an error
    /// rather than a panic).
    #[error("AES-128-GCM encryption failed")]
    Aead,
}

/// The keys derived for one message (RFC 8291 §3.4, RFC 8188 §2.2); the
/// intermediate values are kept so the tests can compare each with the RFC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedKeys {
    /// ECDH(as_private, ua_public): the x coordinate, 32 bytes.
    pub ecdh_secret: Vec<u8>,
    /// HKDF-Extract(auth_secret, ecdh_secret).
    pub prk_key: Vec<u8>,
    /// HKDF-Expand(PRK_key, "WebPush: info" 0x00 ua_public as_public, 32).
    pub ikm: Vec<u8>,
    /// HKDF-Extract(salt, IKM).
    pub prk: Vec<u8>,
    /// Content-encryption key, 16 bytes.
    pub cek: [u8; 16],
    /// Nonce of record 0 (the only one), 12 bytes.
    pub nonce: [u8; 12],
}

/// The uncompressed SEC1 encoding of a public key (65 bytes, `0x04 | x | y`).
pub fn public_key_bytes(key: &PublicKey) -> Vec<u8> {
    key.to_encoded_point(false).as_bytes().to_vec()
}

/// Derives the content-encryption key and nonce for a message from the
/// sender's ephemeral key, the subscription's key and auth secret, and the
/// salt (RFC 8291 §3.3-3.4, RFC 8188 §2.2-2.3).
pub fn derive_keys(
    as_secret: &SecretKey,
    ua_public: &PublicKey,
    auth_secret: &[u8; AUTH_SECRET_LEN],
    salt: &[u8; SALT_LEN],
) -> DerivedKeys {
    let shared = p256::ecdh::diffie_hellman(as_secret.to_nonzero_scalar(), ua_public.as_affine());
    let ecdh_secret = shared.raw_secret_bytes().to_vec();

    let (prk_key, key_hkdf) = Hkdf::<Sha256>::extract(Some(auth_secret), &ecdh_secret);
    let mut key_info = Vec::with_capacity(14 + 2 * PUBLIC_KEY_LEN);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(&public_key_bytes(ua_public));
    key_info.extend_from_slice(&public_key_bytes(&as_secret.public_key()));
    let mut ikm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA-256's 8160-byte ceiling: cannot fail.
    let _ = key_hkdf.expand(&key_info, &mut ikm);

    let (prk, hkdf) = Hkdf::<Sha256>::extract(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    let _ = hkdf.expand(b"Content-Encoding: aes128gcm\0", &mut cek);
    let mut nonce = [0u8; 12];
    let _ = hkdf.expand(b"Content-Encoding: nonce\0", &mut nonce);

    DerivedKeys {
        ecdh_secret,
        prk_key: prk_key.to_vec(),
        ikm: ikm.to_vec(),
        prk: prk.to_vec(),
        cek,
        nonce,
    }
}

/// Encrypts `plaintext` for a subscription with a fresh ephemeral key and
/// salt: the whole `aes128gcm` body to POST.
///
/// Errors: [`EceError::TooBig`] over [`MAX_PLAINTEXT_LEN`] bytes.
pub fn encrypt(
    ua_public: &PublicKey,
    auth_secret: &[u8; AUTH_SECRET_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, EceError> {
    use rand::RngCore;
    let mut rng = rand::rngs::OsRng;
    let as_secret = SecretKey::random(&mut rng);
    let mut salt = [0u8; SALT_LEN];
    rng.fill_bytes(&mut salt);
    encrypt_with(ua_public, auth_secret, plaintext, &as_secret, &salt)
}

/// [`encrypt`] with the ephemeral key and salt given (tests, RFC 8291 §5).
pub fn encrypt_with(
    ua_public: &PublicKey,
    auth_secret: &[u8; AUTH_SECRET_LEN],
    plaintext: &[u8],
    as_secret: &SecretKey,
    salt: &[u8; SALT_LEN],
) -> Result<Vec<u8>, EceError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(EceError::TooBig(plaintext.len()));
    }
    let keys = derive_keys(as_secret, ua_public, auth_secret, salt);
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(0x02); // last-record delimiter, no padding (RFC 8188 §2)
    let cipher = Aes128Gcm::new_from_slice(&keys.cek).map_err(|_| EceError::Aead)?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&keys.nonce), record.as_slice())
        .map_err(|_| EceError::Aead)?;

    let mut body = Vec::with_capacity(HEADER_LEN + sealed.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(PUBLIC_KEY_LEN as u8);
    body.extend_from_slice(&public_key_bytes(&as_secret.public_key()));
    body.extend_from_slice(&sealed);
    Ok(body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use proptest::prelude::*;

    pub(crate) fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    // RFC 8291 §5, "Push Message Encryption Example", every published value.
    pub(crate) const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    pub(crate) const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    pub(crate) const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    pub(crate) const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    pub(crate) const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    pub(crate) const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    pub(crate) const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
    const PRK_KEY: &str = "Snr3JMxaHVDXHWJn5wdC52WjpCtd2EIEGBykDcZW32k";
    const KEY_INFO: &str = "V2ViUHVzaDogaW5mbwAEJXGyvs3942BVGq8e0PTNNmwRzr5VX4m8t7GGpTM5FzFo7OLr4BhZe9MEebhuPI-OztV3ylkYfpJGmQ22ggCLDgT-M_SrDepxkU21WCP3O1SUj0EwbZIHMtu5pZpTKGSCIA5Zent7wmC6HCJ5mFgJkuk5cwAvMBKiiujwa7t45ewP";
    const IKM: &str = "S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg";
    const PRK: &str = "09_eUZGrsvxChDCGRCdkLiDXrReGOEVeSCdCcPBSJSc";
    const CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
    const NONCE: &str = "4h_95klXJ5E_qnoN";
    const HEADER: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const CIPHERTEXT: &str =
        "8pfeW0KbunFT06SuDKoJH9Ql87S1QUrdirN6GcG7sFz1y1sqLgVi1VhjVkHsUoEsbI_0LpXMuGvnzQ";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn rfc_inputs() -> (SecretKey, PublicKey, [u8; 16], [u8; 16]) {
        let as_secret = SecretKey::from_slice(&b64(AS_PRIVATE)).unwrap();
        let ua_public = PublicKey::from_sec1_bytes(&b64(UA_PUBLIC)).unwrap();
        let auth: [u8; 16] = b64(AUTH).try_into().unwrap();
        let salt: [u8; 16] = b64(SALT).try_into().unwrap();
        (as_secret, ua_public, auth, salt)
    }

    /// Decrypts one `aes128gcm` body with the subscription's private key,
    /// written from RFC 8188 §2 / RFC 8291 §3 independently of [`encrypt`]
    /// (header parsed from the bytes, keys derived with raw HMAC-SHA-256).
    pub(crate) fn decrypt(ua_secret: &SecretKey, auth: &[u8], body: &[u8]) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        fn hmac(key: &[u8], data: &[&[u8]]) -> Vec<u8> {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
            for part in data {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        let salt = &body[..16];
        let rs = u32::from_be_bytes(body[16..20].try_into().unwrap());
        let idlen = body[20] as usize;
        let keyid = &body[21..21 + idlen];
        let records = &body[21 + idlen..];
        assert!(records.len() <= rs as usize, "one record only");
        let as_public = PublicKey::from_sec1_bytes(keyid).unwrap();
        let ecdh = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), as_public.as_affine());
        let ua_public = ua_secret.public_key().to_encoded_point(false);
        let prk_key = hmac(auth, &[ecdh.raw_secret_bytes()]);
        let ikm = hmac(
            &prk_key,
            &[b"WebPush: info\0", ua_public.as_bytes(), keyid, &[1]],
        );
        let prk = hmac(salt, &[&ikm]);
        let cek = &hmac(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]])[..16];
        let nonce = &hmac(&prk, &[b"Content-Encoding: nonce\0", &[1]])[..12];
        let cipher = Aes128Gcm::new_from_slice(cek).unwrap();
        let mut plain = cipher.decrypt(Nonce::from_slice(nonce), records).unwrap();
        while plain.last() == Some(&0) {
            plain.pop();
        }
        assert_eq!(plain.pop(), Some(2), "last-record delimiter");
        plain
    }

    #[test]
    fn rfc8291_example_intermediate_values() {
        let (as_secret, ua_public, auth, salt) = rfc_inputs();
        assert_eq!(public_key_bytes(&as_secret.public_key()), b64(AS_PUBLIC));
        let keys = derive_keys(&as_secret, &ua_public, &auth, &salt);
        assert_eq!(keys.ecdh_secret, b64(ECDH_SECRET));
        assert_eq!(keys.prk_key, b64(PRK_KEY));
        let mut key_info = b"WebPush: info\0".to_vec();
        key_info.extend(b64(UA_PUBLIC));
        key_info.extend(b64(AS_PUBLIC));
        assert_eq!(key_info, b64(KEY_INFO));
        assert_eq!(keys.ikm, b64(IKM));
        assert_eq!(keys.prk, b64(PRK));
        assert_eq!(keys.cek.to_vec(), b64(CEK));
        assert_eq!(keys.nonce.to_vec(), b64(NONCE));
    }

    #[test]
    fn rfc8291_example_body_byte_for_byte() {
        let (as_secret, ua_public, auth, salt) = rfc_inputs();
        let body =
            encrypt_with(&ua_public, &auth, PLAINTEXT.as_bytes(), &as_secret, &salt).unwrap();
        assert_eq!(body[..HEADER_LEN], b64(HEADER)[..]);
        assert_eq!(body[HEADER_LEN..], b64(CIPHERTEXT)[..]);
        assert_eq!(URL_SAFE_NO_PAD.encode(&body), BODY);
        let ua_secret = SecretKey::from_slice(&b64(UA_PRIVATE)).unwrap();
        assert_eq!(decrypt(&ua_secret, &auth, &body), PLAINTEXT.as_bytes());
    }

    #[test]
    fn rfc8188_header_layout() {
        let ua_secret = SecretKey::random(&mut rand::rngs::OsRng);
        let body = encrypt(&ua_secret.public_key(), &[9; 16], b"hi").unwrap();
        assert_eq!(HEADER_LEN, 86);
        assert_eq!(&body[16..20], &[0, 0, 0x10, 0], "rs = 4096, big-endian");
        assert_eq!(body[20], 65, "idlen");
        assert_eq!(body[21], 0x04, "keyid is an uncompressed point");
        assert!(PublicKey::from_sec1_bytes(&body[21..86]).is_ok());
        assert_eq!(body.len(), HEADER_LEN + 2 + 1 + TAG_LEN);
        // A fresh salt and ephemeral key per message.
        let again = encrypt(&ua_secret.public_key(), &[9; 16], b"hi").unwrap();
        assert_ne!(body[..86], again[..86]);
    }

    #[test]
    fn limit_is_one_4096_byte_record() {
        assert_eq!(MAX_PLAINTEXT_LEN, 3993);
        let ua = SecretKey::random(&mut rand::rngs::OsRng).public_key();
        let full = encrypt(&ua, &[1; 16], &[b'x'; MAX_PLAINTEXT_LEN]).unwrap();
        assert_eq!(full.len(), RECORD_SIZE as usize);
        assert_eq!(
            encrypt(&ua, &[1; 16], &[b'x'; MAX_PLAINTEXT_LEN + 1]),
            Err(EceError::TooBig(MAX_PLAINTEXT_LEN + 1))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_payloads_round_trip(
            payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PLAINTEXT_LEN),
            auth in any::<[u8; 16]>(),
        ) {
            let ua_secret = SecretKey::random(&mut rand::rngs::OsRng);
            let body = encrypt(&ua_secret.public_key(), &auth, &payload).unwrap();
            prop_assert!(body.len() <= RECORD_SIZE as usize);
            prop_assert_eq!(decrypt(&ua_secret, &auth, &body), payload);
        }
    }
}
