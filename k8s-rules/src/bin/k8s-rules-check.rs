//! Checks Kubernetes objects against the API server's validation rules.
//!
//! `k8s-rules-check [FILE…]` reads multi-document YAML or JSON from the files (or stdin when
//! none or `-` is given), prints one line per violation and exits 1 when there is any, 2 when
//! the input does not parse.

use std::io::Read;
use std::process::ExitCode;

fn read(source: &str) -> std::io::Result<String> {
    if source == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(source)
    }
}

fn main() -> ExitCode {
    let mut sources: Vec<String> = std::env::args().skip(1).collect();
    if sources.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: k8s-rules-check [FILE…]  (stdin when no FILE or '-')");
        return ExitCode::SUCCESS;
    }
    if sources.is_empty() {
        sources.push("-".into());
    }
    let (mut objects, mut violations) = (0, 0);
    for source in &sources {
        let docs = match read(source)
            .map_err(|e| e.to_string())
            .and_then(|t| k8s_rules::parse_documents(&t).map_err(|e| e.to_string()))
        {
            Ok(docs) => docs,
            Err(e) => {
                eprintln!("{source}: {e}");
                return ExitCode::from(2);
            }
        };
        for report in k8s_rules::check_documents(&docs) {
            objects += 1;
            violations += report.violations.len();
            for v in &report.violations {
                println!("{source}: {}: {v}", report.object);
            }
        }
    }
    eprintln!("{objects} objects checked, {violations} violations");
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
