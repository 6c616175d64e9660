//! A provider written outside the crate, registered under a kind of its
//! own, and proven with the provider conformance suite.
//!
//! `Shout` (in this folder's `lib.rs`) answers every message by repeating
//! the last user message in capitals; it streams word by word and embeds
//! texts as letter histograms.
//! Real plugins call a vendor's API instead; the shape is the same: implement
//! `Provider`, register a factory, pass `run_provider_conformance`.
//!
//! Run it (exits non-zero if a conformance check fails):
//!
//! ```sh
//! cargo run -p chatcore-examples --example custom_provider
//! ```

use std::process::ExitCode;

use chatcore::provider::{ProviderRegistry, ProviderSpec};
use chatcore::testkit::provider::{ConformanceConfig, run_provider_conformance_with};
use chatcore_examples::{KIND, Shout};

#[tokio::main]
async fn main() -> ExitCode {
    let mut registry = ProviderRegistry::with_builtins();
    registry.register(KIND, Shout::build);
    let spec = ProviderSpec::new(KIND).with_api_key("shout-secret-key-123");
    let provider = match registry.build(&spec) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot build the provider: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = run_provider_conformance_with(
        provider,
        ConformanceConfig {
            model: "shout-1".to_owned(),
            secret: Some("shout-secret-key-123".to_owned()),
            ..ConformanceConfig::default()
        },
    )
    .await;
    println!("{report}");
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
