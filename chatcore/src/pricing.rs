//! Prices and the cost of a turn.
//!
//! Money is integer micro-units of a currency (`1_000_000` = one US dollar),
//! never a float: sums of costs are exact, and a budget's spent amount
//! equals the sum of its messages' costs to the micro-unit. A price is
//! micro-units per million tokens, in three parts (input, cached input,
//! output), so a list price of `$2.50 / 1M` is `2_500_000`.
//!
//! A message's cost is rounded **up** to the next micro-unit: a priced turn
//! that produced tokens never costs 0, and rounding never lets spend slip
//! under a budget.
//!
//! Where a price comes from, first match wins:
//! 1. the tenant's override for the provider configuration and model
//!    ([`crate::domain::PriceOverride`], set through the management API);
//! 2. the catalog's list prices ([`CATALOG_PRICES`]) for the vendor, matched
//!    by model name exactly or with a dated suffix (`gpt-4o-2024-08-06` is
//!    `gpt-4o`; `gpt-4o-mini` is not);
//! 3. none: the model is `unpriced` and costs nothing.

use serde::{Deserialize, Serialize};

/// Micro-units per unit of currency.
pub const MICROS: i64 = 1_000_000;

/// The currency of every amount (prices, costs, budgets).
pub const CURRENCY: &str = "USD";

/// A price per million tokens, in micro-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Price {
    /// Per million uncached input tokens.
    pub input_per_mtok: i64,
    /// Per million input tokens read from the vendor's prompt cache.
    pub cached_input_per_mtok: i64,
    /// Per million output tokens (reasoning tokens included).
    pub output_per_mtok: i64,
}

impl Price {
    /// The cost of `prompt` input tokens (of which `cached` were read from
    /// the cache) and `completion` output tokens, rounded up to a
    /// micro-unit. Cached tokens beyond `prompt` are capped at it.
    pub fn cost(&self, prompt: u32, cached: u32, completion: u32) -> i64 {
        let cached = cached.min(prompt);
        let uncached = i128::from(prompt - cached);
        let total = uncached * i128::from(self.input_per_mtok.max(0))
            + i128::from(cached) * i128::from(self.cached_input_per_mtok.max(0))
            + i128::from(completion) * i128::from(self.output_per_mtok.max(0));
        let per = 1_000_000i128;
        let micros = (total + per - 1) / per;
        micros.min(i128::from(i64::MAX)) as i64
    }

    /// The dearer of two prices, part by part (a worst case over a
    /// primary provider and its fallback).
    pub fn max(self, o: Price) -> Price {
        Price {
            input_per_mtok: self.input_per_mtok.max(o.input_per_mtok),
            cached_input_per_mtok: self.cached_input_per_mtok.max(o.cached_input_per_mtok),
            output_per_mtok: self.output_per_mtok.max(o.output_per_mtok),
        }
    }
}

/// A list price of a catalog model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogPrice {
    /// Catalog key of the vendor (`openai`, `anthropic`, `google`).
    pub provider: &'static str,
    /// The model's name without a dated suffix.
    pub model: &'static str,
    /// Its price.
    pub price: Price,
    /// When the price was taken from the vendor's price page (`YYYY-MM-DD`).
    pub as_of: &'static str,
}

const fn p(
    provider: &'static str,
    model: &'static str,
    input: i64,
    cached: i64,
    output: i64,
    as_of: &'static str,
) -> CatalogPrice {
    CatalogPrice {
        provider,
        model,
        price: Price {
            input_per_mtok: input,
            cached_input_per_mtok: cached,
            output_per_mtok: output,
        },
        as_of,
    }
}

/// List prices (USD micro-units per million tokens) of the common models,
/// standard tier, from the vendors' price pages on the date given. Gemini's
/// are for prompts up to 200k tokens. A tenant overrides any of them, or
/// adds others, per provider configuration.
pub const CATALOG_PRICES: &[CatalogPrice] = &[
    // OpenAI
    p(
        "openai",
        "gpt-4o",
        2_500_000,
        1_250_000,
        10_000_000,
        "2025-08-07",
    ),
    p(
        "openai",
        "gpt-4o-mini",
        150_000,
        75_000,
        600_000,
        "2025-08-07",
    ),
    p(
        "openai",
        "gpt-4.1",
        2_000_000,
        500_000,
        8_000_000,
        "2025-08-07",
    ),
    p(
        "openai",
        "gpt-4.1-mini",
        400_000,
        100_000,
        1_600_000,
        "2025-08-07",
    ),
    p(
        "openai",
        "gpt-4.1-nano",
        100_000,
        25_000,
        400_000,
        "2025-08-07",
    ),
    p(
        "openai",
        "gpt-5",
        1_250_000,
        125_000,
        10_000_000,
        "2025-08-07",
    ),
    p(
        "openai",
        "gpt-5-mini",
        250_000,
        25_000,
        2_000_000,
        "2025-08-07",
    ),
    p("openai", "gpt-5-nano", 50_000, 5_000, 400_000, "2025-08-07"),
    p("openai", "o3", 2_000_000, 500_000, 8_000_000, "2025-08-07"),
    p(
        "openai",
        "o3-mini",
        1_100_000,
        550_000,
        4_400_000,
        "2025-08-07",
    ),
    p(
        "openai",
        "o4-mini",
        1_100_000,
        275_000,
        4_400_000,
        "2025-08-07",
    ),
    p(
        "openai",
        "text-embedding-3-small",
        20_000,
        20_000,
        0,
        "2025-08-07",
    ),
    p(
        "openai",
        "text-embedding-3-large",
        130_000,
        130_000,
        0,
        "2025-08-07",
    ),
    // Anthropic (cached input: cache reads)
    p(
        "anthropic",
        "claude-opus-4-1",
        15_000_000,
        1_500_000,
        75_000_000,
        "2025-10-15",
    ),
    p(
        "anthropic",
        "claude-opus-4",
        15_000_000,
        1_500_000,
        75_000_000,
        "2025-10-15",
    ),
    p(
        "anthropic",
        "claude-sonnet-4-5",
        3_000_000,
        300_000,
        15_000_000,
        "2025-10-15",
    ),
    p(
        "anthropic",
        "claude-sonnet-4",
        3_000_000,
        300_000,
        15_000_000,
        "2025-10-15",
    ),
    p(
        "anthropic",
        "claude-haiku-4-5",
        1_000_000,
        100_000,
        5_000_000,
        "2025-10-15",
    ),
    p(
        "anthropic",
        "claude-3-7-sonnet",
        3_000_000,
        300_000,
        15_000_000,
        "2025-10-15",
    ),
    p(
        "anthropic",
        "claude-3-5-sonnet",
        3_000_000,
        300_000,
        15_000_000,
        "2025-10-15",
    ),
    p(
        "anthropic",
        "claude-3-5-haiku",
        800_000,
        80_000,
        4_000_000,
        "2025-10-15",
    ),
    p(
        "anthropic",
        "claude-3-haiku",
        250_000,
        30_000,
        1_250_000,
        "2025-10-15",
    ),
    // Google Gemini (prompts up to 200k tokens)
    p(
        "google",
        "gemini-2.5-pro",
        1_250_000,
        310_000,
        10_000_000,
        "2025-08-07",
    ),
    p(
        "google",
        "gemini-2.5-flash",
        300_000,
        75_000,
        2_500_000,
        "2025-08-07",
    ),
    p(
        "google",
        "gemini-2.5-flash-lite",
        100_000,
        25_000,
        400_000,
        "2025-08-07",
    ),
    p(
        "google",
        "gemini-2.0-flash",
        100_000,
        25_000,
        400_000,
        "2025-08-07",
    ),
    p(
        "google",
        "gemini-2.0-flash-lite",
        75_000,
        75_000,
        300_000,
        "2025-08-07",
    ),
    p(
        "google",
        "gemini-1.5-pro",
        1_250_000,
        312_500,
        5_000_000,
        "2025-08-07",
    ),
    p(
        "google",
        "gemini-1.5-flash",
        75_000,
        18_750,
        300_000,
        "2025-08-07",
    ),
];

/// Whether `model` is `base` or `base` with a dated or versioned suffix:
/// `-2024-08-06`, `-20241022`, `-001`, `-latest`.
fn matches_model(model: &str, base: &str) -> bool {
    match model.strip_prefix(base) {
        Some("") => true,
        Some(rest) => match rest.strip_prefix('-') {
            Some("latest") => true,
            Some(s) => {
                s.starts_with(|c: char| c.is_ascii_digit())
                    && s.chars().all(|c| c.is_ascii_digit() || c == '-')
            }
            None => false,
        },
        None => false,
    }
}

/// The catalog's list price of `model` at vendor `provider` (a catalog
/// key; `openai_compatible` vendors have no list prices).
pub fn catalog_price(provider: &str, model: &str) -> Option<&'static CatalogPrice> {
    CATALOG_PRICES
        .iter()
        .filter(|c| c.provider == provider && matches_model(model, c.model))
        // The longest base wins (`gpt-4o-mini` over `gpt-4o`).
        .max_by_key(|c| c.model.len())
}

/// The list prices of one vendor.
pub fn catalog_prices(provider: &str) -> Vec<CatalogPrice> {
    CATALOG_PRICES
        .iter()
        .filter(|c| c.provider == provider)
        .copied()
        .collect()
}

/// The cost of one message, as stored on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cost {
    /// Micro-units of [`CURRENCY`], rounded up.
    pub micros: i64,
    /// Input tokens read from the vendor's cache (part of the prompt
    /// tokens).
    pub cached_tokens: u32,
    /// False when no price was known for the model: the cost is 0.
    pub priced: bool,
}

impl Cost {
    /// The cost of a usage at `price` (None: unpriced, 0).
    pub fn of(price: Option<Price>, prompt: u32, cached: u32, completion: u32) -> Self {
        match price {
            Some(p) => Cost {
                micros: p.cost(prompt, cached, completion),
                cached_tokens: cached,
                priced: true,
            },
            None => Cost {
                micros: 0,
                cached_tokens: cached,
                priced: false,
            },
        }
    }
}

/// Formats micro-units as a decimal amount (`1234567` → `"1.234567"`), for
/// replies and logs. Exact: no float involved.
pub fn format_micros(m: i64) -> String {
    let sign = if m < 0 { "-" } else { "" };
    let a = m.unsigned_abs();
    format!("{sign}{}.{:06}", a / 1_000_000, a % 1_000_000)
}

/// Parses a decimal amount (`"2.5"`, `"0.000001"`, `"10"`) into
/// micro-units, exactly; more than six decimals, a sign or anything else
/// is an error.
pub fn parse_micros(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |d: &str| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit());
    if !digits(whole) || (!frac.is_empty() && !digits(frac)) || s.ends_with('.') {
        return Err(format!("{s:?} is not a decimal amount like \"2.50\""));
    }
    if frac.len() > 6 {
        return Err(format!("{s:?} has more than 6 decimals"));
    }
    let w: i64 = whole.parse().map_err(|_| format!("{s:?} is too large"))?;
    let f: i64 = format!("{frac:0<6}").parse().unwrap_or(0);
    w.checked_mul(MICROS)
        .and_then(|w| w.checked_add(f))
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_suffixes_match_and_longer_names_win() {
        let m = |p: &str, m: &str| catalog_price(p, m).map(|c| c.model);
        assert_eq!(m("openai", "gpt-4o"), Some("gpt-4o"));
        assert_eq!(m("openai", "gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(m("openai", "gpt-4o-mini"), Some("gpt-4o-mini"));
        assert_eq!(m("openai", "gpt-4o-mini-2024-07-18"), Some("gpt-4o-mini"));
        assert_eq!(m("openai", "gpt-4o-audio-preview"), None);
        assert_eq!(
            m("anthropic", "claude-sonnet-4-5-20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            m("anthropic", "claude-sonnet-4-20250514"),
            Some("claude-sonnet-4")
        );
        assert_eq!(
            m("anthropic", "claude-3-5-haiku-latest"),
            Some("claude-3-5-haiku")
        );
        assert_eq!(
            m("google", "gemini-2.0-flash-001"),
            Some("gemini-2.0-flash")
        );
        assert_eq!(
            m("google", "gemini-2.0-flash-lite"),
            Some("gemini-2.0-flash-lite")
        );
        assert_eq!(m("openai", "claude-3-haiku"), None, "per vendor");
        assert_eq!(m("mock", "mock-1"), None);
    }

    #[test]
    fn cost_rounds_up_and_counts_cached_tokens_at_their_price() {
        let gpt4o_mini = catalog_price("openai", "gpt-4o-mini").unwrap().price;
        // 1 input token at $0.15/M is 0.15 micro-units: rounded up to 1.
        assert_eq!(gpt4o_mini.cost(1, 0, 0), 1);
        assert_eq!(gpt4o_mini.cost(0, 0, 0), 0);
        // 1M in, 1M out: $0.15 + $0.60.
        assert_eq!(gpt4o_mini.cost(1_000_000, 0, 1_000_000), 750_000);
        // Half of the input cached at half price.
        assert_eq!(gpt4o_mini.cost(1_000_000, 500_000, 0), 75_000 + 37_500);
        // Cached beyond the prompt is capped.
        assert_eq!(gpt4o_mini.cost(10, 20, 0), gpt4o_mini.cost(10, 10, 0));
        // No overflow at the extremes.
        let dear = Price {
            input_per_mtok: i64::MAX,
            cached_input_per_mtok: i64::MAX,
            output_per_mtok: i64::MAX,
        };
        assert_eq!(dear.cost(u32::MAX, 0, u32::MAX), i64::MAX);
        assert_eq!(Cost::of(None, 100, 0, 100).micros, 0);
        assert!(!Cost::of(None, 100, 0, 100).priced);
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(parse_micros("2.5"), Ok(2_500_000));
        assert_eq!(parse_micros("0.000001"), Ok(1));
        assert_eq!(parse_micros("10"), Ok(10_000_000));
        assert!(parse_micros("0.0000001").is_err());
        assert!(parse_micros("-1").is_err());
        assert!(parse_micros("1e3").is_err());
        assert!(parse_micros("1.").is_err());
        assert!(parse_micros("").is_err());
        assert!(parse_micros("99999999999999999999").is_err());
        assert_eq!(format_micros(1_234_567), "1.234567");
        assert_eq!(format_micros(1), "0.000001");
        assert_eq!(format_micros(-5), "-0.000005");
    }
}

/// One provider configuration of a bot: catalog key, model, overrides.
type ConfigPrices = (String, Option<String>, Vec<(String, Price)>);

/// The prices a bot's turns are charged at: the tenant's overrides for the
/// bot's provider configurations (primary, then fallback), then the
/// catalog's list prices.
#[derive(Debug, Clone, Default)]
pub struct BotPrices {
    /// (catalog key, the model this configuration answers with, overrides
    /// of this configuration by model).
    configs: Vec<ConfigPrices>,
}

impl BotPrices {
    /// The prices of a bot whose providers are `configs` (primary first)
    /// and whose model is `bot_model`, with the tenant's `overrides`.
    pub fn new(
        configs: &[crate::domain::ProviderConfig],
        bot_model: Option<&str>,
        overrides: &[crate::domain::PriceOverride],
    ) -> Self {
        let configs = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                // The bot's model goes to its primary; a fallback answers
                // with its own default.
                let model = if i == 0 {
                    bot_model.map(str::to_string).or(c.default_model.clone())
                } else {
                    c.default_model.clone()
                };
                let own = overrides
                    .iter()
                    .filter(|o| o.provider_id == c.id)
                    .map(|o| (o.model.clone(), o.price))
                    .collect();
                (c.provider.clone(), model, own)
            })
            .collect();
        Self { configs }
    }

    /// The price of `model` answered by a provider of kind `provider`:
    /// the first of the bot's configurations of that kind with an override
    /// for it (exact name first, then with a dated suffix), else the
    /// catalog's. None: unpriced.
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        for (_, _, own) in self.configs.iter().filter(|(k, ..)| k == provider) {
            if let Some((_, p)) = own.iter().find(|(m, _)| m == model) {
                return Some(*p);
            }
            if let Some((_, p)) = own
                .iter()
                .filter(|(m, _)| matches_model(model, m))
                .max_by_key(|(m, _)| m.len())
            {
                return Some(*p);
            }
        }
        catalog_price(provider, model).map(|c| c.price)
    }

    /// The dearest price over the bot's providers (a turn's worst case);
    /// None when none of them is priced.
    pub fn worst(&self) -> Option<Price> {
        self.configs
            .iter()
            .filter_map(|(kind, model, _)| self.price(kind, model.as_deref()?))
            .reduce(Price::max)
    }
}
