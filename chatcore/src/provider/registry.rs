//! Building providers from their configuration, by kind.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::anthropic::AnthropicProvider;
use super::gemini::GeminiProvider;
use super::mock::MockProvider;
use super::openai::OpenAiProvider;
use super::{
    KIND_ANTHROPIC, KIND_GOOGLE, KIND_MOCK, KIND_OPENAI, KIND_OPENAI_COMPATIBLE, Provider,
    ProviderError, ProviderSpec, RetryingProvider,
};

/// Builds a provider of one kind from a spec.
pub type ProviderFactory =
    Arc<dyn Fn(&ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError> + Send + Sync>;

/// Provider factories by kind: the built-in catalog plus any kind an
/// application registers.
#[derive(Clone)]
pub struct ProviderRegistry {
    factories: BTreeMap<String, ProviderFactory>,
}

impl Default for ProviderRegistry {
    fn default() -> Self {
        Self::with_builtins()
    }
}

impl fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("kinds", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ProviderRegistry {
    /// A registry with no kind at all.
    pub fn empty() -> Self {
        Self {
            factories: BTreeMap::new(),
        }
    }

    /// A registry with the built-in catalog: `openai`, `anthropic`,
    /// `google`, `openai_compatible`, `mock`.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.register(KIND_OPENAI, |s| Ok(Arc::new(OpenAiProvider::openai(s)?)));
        r.register(KIND_OPENAI_COMPATIBLE, |s| {
            Ok(Arc::new(OpenAiProvider::compatible(s)?))
        });
        r.register(KIND_ANTHROPIC, |s| Ok(Arc::new(AnthropicProvider::new(s)?)));
        r.register(KIND_GOOGLE, |s| Ok(Arc::new(GeminiProvider::new(s)?)));
        r.register(KIND_MOCK, |s| Ok(Arc::new(MockProvider::from_spec(s)?)));
        r
    }

    /// Registers (or replaces) the factory of `kind`.
    pub fn register<F>(&mut self, kind: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError> + Send + Sync + 'static,
    {
        self.factories.insert(kind.into(), Arc::new(factory));
        self
    }

    /// Whether `kind` can be built.
    pub fn contains(&self, kind: &str) -> bool {
        self.factories.contains_key(kind)
    }

    /// The kinds that can be built, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Builds a provider from `spec`, wrapped in a [`RetryingProvider`] when
    /// its retry policy allows more than one attempt.
    pub fn build(&self, spec: &ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError> {
        let provider = self.build_unwrapped(spec)?;
        if spec.retry.max_attempts > 1 {
            Ok(Arc::new(RetryingProvider::new(provider, spec.retry)))
        } else {
            Ok(provider)
        }
    }

    /// Builds a provider from `spec` without retries.
    pub fn build_unwrapped(&self, spec: &ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError> {
        let factory = self
            .factories
            .get(&spec.kind)
            .ok_or_else(|| ProviderError::Config {
                source: None,
                message: format!("unknown provider kind {:?}", spec.kind),
            })?;
        factory(spec)
    }
}
