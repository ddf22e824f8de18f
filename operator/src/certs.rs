//! The webhook's own CA and serving certificate (rcgen). The CA lives two years and is renewed
//! 90 days before it expires, the serving certificate lives 90 days and is renewed 30 days
//! before; during a CA renewal the bundle the API server trusts holds both CAs.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::OffsetDateTime;

use crate::{Error, Result};

const DAY: i64 = 86_400;
/// CA lifetime.
pub const CA_LIFETIME: i64 = 730 * DAY;
/// Serving certificate lifetime.
pub const SERVING_LIFETIME: i64 = 90 * DAY;
/// Renew the CA when less than this is left.
pub const CA_RENEW_BEFORE: i64 = 90 * DAY;
/// Renew the serving certificate when less than this is left.
pub const SERVING_RENEW_BEFORE: i64 = 30 * DAY;

/// Everything the webhook's TLS needs, as stored in its Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsBundle {
    /// CA certificates the API server trusts (`caBundle`): the current CA first.
    pub ca_pem: String,
    /// Key of the current CA.
    pub ca_key_pem: String,
    /// Serving certificate.
    pub cert_pem: String,
    /// Serving key.
    pub key_pem: String,
    /// The names the serving certificate is for.
    pub names: Vec<String>,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Certificate(e.to_string())
}

fn at(unix: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(err)
}

/// The DNS names of a webhook Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// A new self-signed CA.
pub fn new_ca(now: i64) -> Result<(String, String)> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "mcp-warden webhook CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = at(now - 300)?;
    params.not_after = at(now + CA_LIFETIME)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `names` (DNS names or IP addresses) signed by the first CA in
/// `ca_pem`.
pub fn issue(
    ca_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    now: i64,
) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(err)?;
    let first_ca = first_pem(ca_pem).ok_or_else(|| err("no CA certificate"))?;
    let issuer = Issuer::from_ca_cert_pem(&first_ca, ca_key).map_err(err)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(err),
        })
        .collect::<Result<_>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = at(now - 300)?;
    params.not_after = at(now + SERVING_LIFETIME)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The first PEM block of a bundle.
fn first_pem(bundle: &str) -> Option<String> {
    let end = "-----END CERTIFICATE-----";
    bundle
        .find(end)
        .map(|i| format!("{}\n", &bundle[..i + end.len()].trim_start()))
}

/// `notAfter` of every certificate in a PEM bundle, Unix seconds, in order.
pub fn not_after_all(pem: &str) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(err)?;
        let cert = block.parse_x509().map_err(err)?;
        out.push(cert.validity().not_after.timestamp());
    }
    if out.is_empty() {
        return Err(err("no certificate in PEM"));
    }
    Ok(out)
}

/// `notAfter` of the first certificate of a PEM bundle.
pub fn not_after(pem: &str) -> Result<i64> {
    Ok(not_after_all(pem)?[0])
}

/// Makes a fresh bundle, or renews what is due in `existing`. Returns the bundle and whether it
/// changed (and must be stored).
pub fn ensure(
    existing: Option<TlsBundle>,
    names: &[String],
    now: i64,
) -> Result<(TlsBundle, bool)> {
    let ca_fresh = |b: &TlsBundle| not_after(&b.ca_pem).is_ok_and(|t| t - now > CA_RENEW_BEFORE);
    let (ca_pem, ca_key_pem) = match &existing {
        Some(b) if ca_fresh(b) => {
            let cert_fresh = not_after(&b.cert_pem).is_ok_and(|t| t - now > SERVING_RENEW_BEFORE);
            if b.names == names && cert_fresh {
                return Ok((b.clone(), false));
            }
            (b.ca_pem.clone(), b.ca_key_pem.clone())
        }
        other => {
            let (ca, key) = new_ca(now)?;
            // Keep the old CA trusted while certificates it signed may still be served.
            let old = other
                .as_ref()
                .and_then(|b| first_pem(&b.ca_pem))
                .filter(|pem| not_after(pem).is_ok_and(|t| t > now))
                .unwrap_or_default();
            (format!("{ca}{old}"), key)
        }
    };
    let (cert_pem, key_pem) = issue(&ca_pem, &ca_key_pem, names, now)?;
    Ok((
        TlsBundle {
            ca_pem,
            ca_key_pem,
            cert_pem,
            key_pem,
            names: names.to_vec(),
        },
        true,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn issues_then_keeps_then_renews() {
        let names = service_names("mcp-warden-webhook", "mcp-warden");
        let t = now();
        let (b, changed) = ensure(None, &names, t).unwrap();
        assert!(changed);
        assert!((not_after(&b.cert_pem).unwrap() - (t + SERVING_LIFETIME)).abs() < 2);
        let (same, changed) = ensure(Some(b.clone()), &names, t + DAY).unwrap();
        assert!(!changed);
        assert_eq!(same, b);
        // Serving certificate due: renewed under the same CA.
        let later = t + SERVING_LIFETIME - SERVING_RENEW_BEFORE + 1;
        let (renewed, changed) = ensure(Some(b.clone()), &names, later).unwrap();
        assert!(changed);
        assert_eq!(renewed.ca_pem, b.ca_pem);
        assert_ne!(renewed.cert_pem, b.cert_pem);
        // New names: reissued.
        let (other, changed) = ensure(Some(b.clone()), &["127.0.0.1".into()], t).unwrap();
        assert!(changed && other.names == ["127.0.0.1"]);
    }

    #[test]
    fn ca_renewal_keeps_the_old_ca_in_the_bundle() {
        let names = vec!["localhost".to_owned()];
        let t = now();
        let (b, _) = ensure(None, &names, t).unwrap();
        let late = t + CA_LIFETIME - CA_RENEW_BEFORE + 1;
        let (renewed, changed) = ensure(Some(b.clone()), &names, late).unwrap();
        assert!(changed);
        let expiries = not_after_all(&renewed.ca_pem).unwrap();
        assert_eq!(expiries.len(), 2, "new CA plus the still-valid old one");
        assert!(renewed.ca_pem.ends_with(&b.ca_pem));
    }

    #[test]
    fn serving_certificate_verifies_against_the_ca() {
        let names = vec!["svc.ns.svc".to_owned(), "127.0.0.1".to_owned()];
        let (b, _) = ensure(None, &names, now()).unwrap();
        let ca = x509_parser::pem::parse_x509_pem(b.ca_pem.as_bytes())
            .unwrap()
            .1;
        let ca = ca.parse_x509().unwrap();
        let leaf = x509_parser::pem::parse_x509_pem(b.cert_pem.as_bytes())
            .unwrap()
            .1;
        let leaf = leaf.parse_x509().unwrap();
        assert_eq!(leaf.issuer(), ca.subject());
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 2);
    }
}
