//! Loading the settings, layer over layer: the compiled-in defaults, a provider's own defaults,
//! `--config FILE`, the customary environment variables, `ENGINE__SECTION__KEY`, flags.

use std::collections::HashMap;
use std::path::PathBuf;

use config::{Config, Environment, File, FileFormat, Map, Source, Value};

use super::{ProviderKind, Settings, CUSTOMARY_ENV, DEFAULTS_TOML, MINILM_DEFAULTS};

/// A refused configuration; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub(super) String);

/// Where settings come from, besides the compiled-in defaults.
#[derive(Debug, Default, Clone)]
pub struct ConfigInputs {
    /// `--config FILE`: must exist when given.
    pub file: Option<PathBuf>,
    /// The environment to read (the process's in `main`, a map of its own in tests).
    pub env: HashMap<String, String>,
    /// Flags, as `key = value` pairs with dotted keys; they win over everything.
    pub overrides: Vec<(String, String)>,
}

impl ConfigInputs {
    /// The process environment, after loading `.env` if there is one.
    pub fn from_process_env() -> Self {
        let _ = dotenvy::dotenv();
        Self {
            env: std::env::vars().collect(),
            ..Self::default()
        }
    }

    pub fn with_override(mut self, key: &str, value: impl Into<String>) -> Self {
        self.overrides.push((key.to_owned(), value.into()));
        self
    }
}

/// The customary variables as a config source, layered below `ENGINE__...`.
#[derive(Debug, Clone)]
struct CustomaryEnv(Map<String, Value>);

impl Source for CustomaryEnv {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

impl Settings {
    pub fn load(inputs: &ConfigInputs) -> Result<Self, ConfigError> {
        let settings = Self::load_over(inputs, None)?;
        // A provider's own defaults sit between config.toml's and the user's settings, so they
        // are known only once the provider is: load again with them.
        let settings = match settings.embedding.provider {
            ProviderKind::MiniLm => Self::load_over(inputs, Some(MINILM_DEFAULTS))?,
            _ => settings,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn load_over(
        inputs: &ConfigInputs,
        provider_defaults: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        if let Some(defaults) = provider_defaults {
            builder = builder.add_source(File::from_str(defaults, FileFormat::Toml));
        }
        if let Some(path) = &inputs.file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "--config {}: no such file",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path.as_path()).required(true));
        }
        let customary: Map<String, Value> = CUSTOMARY_ENV
            .iter()
            .filter_map(|(var, key)| {
                let value = inputs.env.get(*var)?;
                Some((key.to_string(), Value::from(value.clone())))
            })
            .collect();
        let engine_env: Map<String, String> = inputs
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("ENGINE__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(CustomaryEnv(customary)).add_source(
            Environment::with_prefix("ENGINE")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("worker.queues")
                .try_parsing(true)
                .source(Some(engine_env)),
        );
        for (key, value) in &inputs.overrides {
            builder = builder
                .set_override(key.as_str(), value.as_str())
                .map_err(|e| ConfigError(format!("flag for `{key}`: {e}")))?;
        }
        builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| ConfigError(e.to_string()))
    }
}
