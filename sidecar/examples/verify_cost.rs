//! What verifying a never-seen token costs, next to the bare signature check.
//!
//! Makes a key and `2 N` distinct tokens shaped like bench/run.sh's (`typ` `at+jwt`, seven
//! claims), fills the token cache with the first `N` (so that, as in the bench, each new token
//! displaces one), then counts this thread's CPU time per token (CPU time, as `openssl speed`
//! does) of: `bare`, the library's signature check with a parsed key on each token's signing
//! input; `cold`, `Verifier::verify` of each of the other `N` tokens, never seen (the sidecar's
//! whole path, a cache miss); `warm`, the same tokens again (cache hits).
//!
//!     cargo run --release -p mcp-warden-sidecar --example verify_cost -- [RS256|ES256] [N] [--json]
//!
//! With `--json` it prints one JSON line instead (bench/run.sh's `cold` mode reads it).
//!
//! Under callgrind, count one phase with `--collect-atstart=no
//! --toggle-collect='verify_cost::phase_cold'` (or `phase_bare`, `phase_warm`) and divide by `N`
//! (`'*phase_cold*'` would also match the phase's async block, whose entry toggles counting off).
//! The cold phase's work around the signature is its total less
//! `parsed_verify_sig`'s inclusive count.

use std::hint::black_box;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self as sig, KeyPair, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use mcp_warden_sidecar::keys::KeySet;
use mcp_warden_sidecar::verify::{Expectations, Keys, Verifier};
use tokio::runtime::Runtime;

const ISS: &str = "https://bench.mcp-warden.invalid";
const AUD: &str = "http://127.0.0.1:8080/mcp";

/// Signs a message with the example's key.
type Signer = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// A token's signing input and signature, decoded, for the bare check.
struct Signed {
    input: Vec<u8>,
    signature: Vec<u8>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let alg = args.next().unwrap_or_else(|| "RS256".into());
    let n: usize = args.next().map_or(10_000, |n| n.parse().expect("N"));
    let as_json = match args.next().as_deref() {
        None => false,
        Some("--json") => true,
        Some(other) => panic!("unknown argument {other:?} (expected --json)"),
    };
    let (jwk, parsed, sign): (serde_json::Value, ParsedPublicKey, Signer) = match alg.as_str() {
        "RS256" => {
            let pair = sig::RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
            let public = pair.public_key();
            let jwk = serde_json::json!({"kty": "RSA", "kid": "bench-rsa", "alg": "RS256",
                    "use": "sig", "n": B64.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": B64.encode(public.exponent().big_endian_without_leading_zero())});
            let parsed = ParsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, public.as_ref())
                .expect("parsed RSA key");
            let sign = move |m: &[u8]| {
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(&sig::RSA_PKCS1_SHA256, &SystemRandom::new(), m, &mut out)
                    .expect("sign");
                out
            };
            (jwk, parsed, Box::new(sign))
        }
        "ES256" => {
            let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = sig::EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
            let pair = sig::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref()).unwrap();
            let point = pair.public_key().as_ref().to_vec();
            let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "bench-rsa",
                    "alg": "ES256", "use": "sig",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..])});
            let parsed = ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, &point).unwrap();
            let sign = move |m: &[u8]| {
                let s = pair.sign(&SystemRandom::new(), m).expect("sign");
                s.as_ref().to_vec()
            };
            (jwk, parsed, Box::new(sign))
        }
        other => panic!("unknown algorithm {other}"),
    };
    let (set, _) = KeySet::from_json(serde_json::json!({ "keys": [jwk] }).to_string().as_bytes())
        .expect("key set");
    let verifier = Verifier::new(
        Expectations {
            issuer: ISS.into(),
            audiences: vec![AUD.into()],
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            leeway: 60,
            token_types: Vec::new(),
        },
        Keys::Local(Arc::new(set)),
    );
    let now = jsonwebtoken::get_current_timestamp();
    let head = B64.encode(format!(
        r#"{{"alg":"{alg}","kid":"bench-rsa","typ":"at+jwt"}}"#
    ));
    let mut tokens = Vec::with_capacity(2 * n);
    let mut signed = Vec::with_capacity(2 * n);
    for i in 0..2 * n {
        let claims = format!(
            r#"{{"iss":"{ISS}","aud":"{AUD}","sub":"bench","scope":"mcp:tools","iat":{now},"exp":{},"jti":"{:032x}"}}"#,
            now + 3 * 3600,
            (i as u128) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834 + 1
        );
        let input = format!("{head}.{}", B64.encode(claims));
        let signature = sign(input.as_bytes());
        tokens.push(format!("{input}.{}", B64.encode(&signature)));
        signed.push(Signed {
            input: input.into_bytes(),
            signature,
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // The cache first fills with as many other tokens, as in bench/run.sh, where each cold pass
    // follows another: every cold token then displaces one.
    let fill = tokens.drain(..n).collect::<Vec<_>>();
    signed.drain(..n);
    prefill(&rt, &verifier, &fill);

    // The thread's CPU time is read from schedstat, which advances at scheduler ticks: the
    // bare and warm phases repeat so that each lasts long enough.
    let per_token = |passes: usize, phase: &mut dyn FnMut()| {
        let t = cpu_ns();
        for _ in 0..passes {
            phase();
        }
        (cpu_ns() - t) as f64 / (n * passes) as f64
    };
    let bare = per_token(3, &mut || phase_bare(&parsed, &signed));
    let cold = per_token(1, &mut || phase_cold(&rt, &verifier, &tokens));
    let warm = per_token(20, &mut || phase_warm(&rt, &verifier, &tokens));
    if as_json {
        let line = serde_json::json!({"kind": "loop", "alg": alg, "tokens": n,
            "bare_per_s": 1e9 / bare, "verify_per_s": 1e9 / (cold - warm)});
        println!("{line}");
        return;
    }
    println!(
        "{alg} n={n}: bare {bare:.0} ns ({:.0}/s)  cold {cold:.0} ns  warm {warm:.0} ns  \
         cold-warm {:.0} ns ({:.0}/s, {:.2}x bare)",
        1e9 / bare,
        cold - warm,
        1e9 / (cold - warm),
        (cold - warm) / bare
    );
}

/// This thread's time on a CPU, nanoseconds (as `openssl speed` counts CPU time, not wall time).
fn cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .expect("schedstat")
}

#[inline(never)]
fn phase_bare(key: &ParsedPublicKey, signed: &[Signed]) {
    for s in signed {
        assert!(black_box(key).verify_sig(&s.input, &s.signature).is_ok());
    }
}

#[inline(never)]
fn prefill(rt: &Runtime, verifier: &Verifier, tokens: &[String]) {
    rt.block_on(async {
        for token in tokens {
            verifier.verify(token).await.expect("valid");
        }
    })
}

#[inline(never)]
fn phase_cold(rt: &Runtime, verifier: &Verifier, tokens: &[String]) {
    rt.block_on(async {
        for token in tokens {
            let (_, cached) = verifier.verify(black_box(token)).await.expect("valid");
            assert!(!cached);
        }
    })
}

#[inline(never)]
fn phase_warm(rt: &Runtime, verifier: &Verifier, tokens: &[String]) {
    rt.block_on(async {
        for token in tokens {
            let (_, cached) = verifier.verify(black_box(token)).await.expect("valid");
            assert!(cached);
        }
    })
}
