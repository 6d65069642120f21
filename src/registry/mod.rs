//! The `Registry`: restart strategies by name, and the running supervisors by name.
//!
//! Built explicitly at start-up and passed to whoever builds or looks up supervisors (an actix-web
//! app as `Data`, a batch runner, a test). It replaces a process-wide "current server manager"
//! global: two registries in one process never see each other, and there is no `static` state to
//! reset.
//!
//! ```text
//!  Registry ─┬─ strategies: name → constructor   process_kill, rest_endpoint, command, yours…
//!            └─ supervisors: name → Supervisor   what start() built, for lookups
//!
//!  start(config, target)
//!    config.restart_strategies ──► constructor(StrategyContext) ──► [Strategy, …] ──► RestartCoordinator
//!                                  (each starts an actor answering Restart)          asks them in order
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use actix::Actor;
//! use respawn::backends::CommandRestart;
//! use respawn::registry::Registry;
//! use respawn::supervisor::{SupervisorConfig, Target};
//!
//! let mut registry = Registry::new();
//! // Ask an outside orchestrator first; kill the process ourselves if it fails.
//! registry.register_strategy("orchestrator", |context| {
//!     let argv = ["orchestrator-cli", "restart", context.server_name()];
//!     Ok(CommandRestart::new(argv, Some(context.health_url().to_owned())).start().recipient())
//! })?;
//! let mut config = SupervisorConfig::new("llm");
//! config.restart_strategies = Some(vec!["orchestrator".into(), "process_kill".into()]);
//! let target = Target::command("llm", "llama-server", ["--port", "{port}"], 8001);
//! let supervisor = registry.start(config, target)?;
//! assert_eq!(supervisor.strategy_names(), ["orchestrator", "process_kill"]);
//! # Ok(()) }
//! ```

pub(crate) mod strategies;

use std::collections::BTreeMap;

pub use strategies::{
    NotApplicable, RegistrationError, SelectionError, Strategies, StrategyContext, COMMAND,
    DEFAULT_ORDER, PROCESS_KILL, REST_ENDPOINT,
};

use respawn_backends::RestartRecipient;

use crate::supervisor::{Supervisor, SupervisorConfig, SupervisorError, Target};

/// Why a registration or a start through the registry was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A supervisor of that name is already registered.
    #[error("a server named `{name}` is already registered")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A restart strategy could not be registered.
    #[error(transparent)]
    Strategy(#[from] RegistrationError),
    /// The supervisor could not be started (its configuration, or its strategies).
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
}

/// Restart strategies by name, and supervisors by name.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    strategies: Strategies,
    supervisors: BTreeMap<String, Supervisor>,
}

impl Registry {
    /// The built-in strategies (`process_kill`, `rest_endpoint`, `command`) and no supervisor.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a restart strategy: `constructor` is called once for every supervisor that names
    /// `name` (or, for a built-in name, that names none and to which it applies), and starts the
    /// actor that answers that supervisor's `Restart`.
    pub fn register_strategy<F>(
        &mut self,
        name: &'static str,
        constructor: F,
    ) -> Result<(), RegistryError>
    where
        F: Fn(&StrategyContext<'_>) -> Result<RestartRecipient, NotApplicable>
            + Send
            + Sync
            + 'static,
    {
        Ok(self.strategies.register(name, constructor)?)
    }

    /// The registered strategies.
    pub fn strategies(&self) -> &Strategies {
        &self.strategies
    }

    /// Starts a supervisor with this registry's strategies and keeps it under its name. A taken
    /// name is refused before anything starts. Must run inside an actix system.
    pub fn start(
        &mut self,
        config: SupervisorConfig,
        target: Target,
    ) -> Result<Supervisor, RegistryError> {
        if self.supervisors.contains_key(&config.name) {
            return Err(RegistryError::DuplicateName { name: config.name });
        }
        let supervisor = Supervisor::start_with(&self.strategies, config, target)?;
        self.supervisors
            .insert(supervisor.name().to_owned(), supervisor.clone());
        Ok(supervisor)
    }

    /// Adds a supervisor started elsewhere under its own name.
    pub fn register(&mut self, supervisor: Supervisor) -> Result<(), RegistryError> {
        let name = supervisor.name().to_owned();
        if self.supervisors.contains_key(&name) {
            return Err(RegistryError::DuplicateName { name });
        }
        self.supervisors.insert(name, supervisor);
        Ok(())
    }

    /// The supervisor called `name`.
    pub fn get(&self, name: &str) -> Option<&Supervisor> {
        self.supervisors.get(name)
    }

    /// Removes and returns the supervisor called `name`.
    pub fn remove(&mut self, name: &str) -> Option<Supervisor> {
        self.supervisors.remove(name)
    }

    /// Every registered supervisor's name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.supervisors.keys().map(String::as_str)
    }

    /// Every supervisor, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Supervisor)> {
        self.supervisors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many supervisors are registered.
    pub fn len(&self) -> usize {
        self.supervisors.len()
    }

    /// Whether no supervisor is registered.
    pub fn is_empty(&self) -> bool {
        self.supervisors.is_empty()
    }
}

#[cfg(test)]
mod tests;
