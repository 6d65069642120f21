//! Restart strategies by name: how the names in a supervisor's `restart_strategies` become the
//! actors its coordinator asks, in order.
//!
//! A strategy is registered as a *constructor*: given the [`StrategyContext`] of the supervisor
//! being built (its configuration, its target, the actor owning its process), it starts an actor
//! answering [`Restart`](respawn_backends::Restart) and hands back its recipient, or says why it does not apply to this
//! supervisor ([`NotApplicable`]). The three built-in ones are registered by every
//! [`Strategies::builtin`]:
//!
//! | name | applies when | restarts by |
//! |---|---|---|
//! | `process_kill` | respawn owns the process ([`Target::Command`]) | [`ProcessKill`]: stop the whole group, start a new one |
//! | `rest_endpoint` | [`SupervisorConfig::rest_restart`] is set | [`RestEndpoint`]: `POST` the server's restart endpoint |
//! | `command` | [`SupervisorConfig::restart_command`] is set | [`CommandRestart`]: run the command |
//!
//! Selection rules, in the order they apply:
//! 1. No names given (`restart_strategies = None`): the built-ins in [`DEFAULT_ORDER`], each only
//!    where it applies — respawn's behaviour before strategies had names.
//! 2. Names given: every name must be registered and appear once, and the list must not be
//!    empty; this is checked before any strategy is built, so a typo starts nothing.
//! 3. A named strategy that does not apply is a configuration error too: it was asked for.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use respawn_backends::{CommandRestart, ProcessKill, RestEndpoint, RestartRecipient, ServerActor};

use crate::coordinator::Strategy;
use crate::supervisor::config::{SupervisorConfig, Target};

/// The name of the built-in [`ProcessKill`] strategy.
pub const PROCESS_KILL: &str = ProcessKill::NAME;
/// The name of the built-in [`RestEndpoint`] strategy.
pub const REST_ENDPOINT: &str = RestEndpoint::NAME;
/// The name of the built-in [`CommandRestart`] strategy.
pub const COMMAND: &str = CommandRestart::NAME;
/// What a supervisor that names no strategy tries, each where it applies: the owned process first
/// (the fastest and surest), then the server's own endpoint, then an outside command.
pub const DEFAULT_ORDER: [&str; 3] = [PROCESS_KILL, REST_ENDPOINT, COMMAND];

/// What a constructor is given: the supervisor being built. Borrowed, because the constructor
/// runs once, inside [`Supervisor::start`](crate::supervisor::Supervisor::start), and keeps what
/// it needs by cloning it into its actor.
pub struct StrategyContext<'a> {
    pub(crate) config: &'a SupervisorConfig,
    pub(crate) target: &'a Target,
    pub(crate) server: Option<&'a Addr<ServerActor>>,
    pub(crate) base_url: &'a str,
    pub(crate) health_url: &'a str,
}

impl StrategyContext<'_> {
    /// The supervised server's name (for logs, and for an orchestrator that knows it by name).
    pub fn server_name(&self) -> &str {
        &self.config.name
    }

    /// The supervisor's whole configuration.
    pub fn config(&self) -> &SupervisorConfig {
        self.config
    }

    /// What is supervised.
    pub fn target(&self) -> &Target {
        self.target
    }

    /// The actor owning the server's process, when respawn owns it: send it `Stop` and `Start`.
    pub fn server(&self) -> Option<&Addr<ServerActor>> {
        self.server
    }

    /// `http://host:port` of the server.
    pub fn base_url(&self) -> &str {
        self.base_url
    }

    /// The server's health URL, to confirm that a restarted server answers.
    pub fn health_url(&self) -> &str {
        self.health_url
    }

    /// How long a restarted server may take to answer its health check: the supervisor's
    /// startup timeout, so a strategy never gives up sooner than a first start would.
    pub fn ready_timeout(&self) -> Duration {
        self.config.core.health.startup_timeout
    }

    /// SIGTERM → SIGKILL grace when stopping the server.
    pub fn stop_grace(&self) -> Duration {
        self.config.stop_grace
    }
}

/// A constructor's answer when its strategy cannot serve this supervisor (no owned process, no
/// endpoint configured, ...): skipped in the default order, an error when named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NotApplicable {
    reason: Cow<'static, str>,
}

impl NotApplicable {
    /// Why the strategy does not apply, said so that the reader knows what to configure.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Why a supervisor's `restart_strategies` cannot be used: a configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// A name no strategy is registered under (often a typo).
    #[error("unknown restart strategy `{name}`; the registered ones are: {}", registered.join(", "))]
    Unknown {
        /// The name as given.
        name: String,
        /// Every registered name, in registration order.
        registered: Vec<&'static str>,
    },
    /// A name given twice: the second would only repeat a strategy that already failed.
    #[error("restart strategy `{name}` is named twice")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// An empty list: name at least one, or turn restarts off instead.
    #[error("no restart strategy is named (name at least one of: {}; or turn restarts off)", registered.join(", "))]
    Empty {
        /// Every registered name, in registration order.
        registered: Vec<&'static str>,
    },
    /// A named strategy that cannot serve this supervisor.
    #[error("restart strategy `{name}` cannot restart this server: {reason}")]
    NotApplicable {
        /// The strategy.
        name: &'static str,
        /// Why, from its constructor.
        reason: NotApplicable,
    },
}

/// Why a strategy could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// The name is taken (the built-ins' included): a supervisor names exactly one constructor.
    #[error("a restart strategy named `{name}` is already registered")]
    Duplicate {
        /// The name.
        name: &'static str,
    },
    /// The name cannot be written in a `restart_strategies` list.
    #[error("invalid restart strategy name `{name}`: use ASCII letters, digits, `_` and `-`")]
    InvalidName {
        /// The name.
        name: &'static str,
    },
}

/// Given a supervisor being built, starts an actor answering [`Restart`](respawn_backends::Restart).
type Constructor =
    Arc<dyn Fn(&StrategyContext<'_>) -> Result<RestartRecipient, NotApplicable> + Send + Sync>;

/// Restart strategies by name, in registration order. A plain value: build one, register yours,
/// pass it to whatever builds supervisors.
#[derive(Clone)]
pub struct Strategies {
    entries: Vec<(&'static str, Constructor)>,
}

impl fmt::Debug for Strategies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Default for Strategies {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Strategies {
    /// `process_kill`, `rest_endpoint` and `command`.
    pub fn builtin() -> Self {
        let mut strategies = Self {
            entries: Vec::new(),
        };
        strategies.insert(PROCESS_KILL, process_kill);
        strategies.insert(REST_ENDPOINT, rest_endpoint);
        strategies.insert(COMMAND, command);
        strategies
    }

    fn insert<F>(&mut self, name: &'static str, constructor: F)
    where
        F: Fn(&StrategyContext<'_>) -> Result<RestartRecipient, NotApplicable>
            + Send
            + Sync
            + 'static,
    {
        self.entries.push((name, Arc::new(constructor)));
    }

    /// Registers `constructor` under `name`, after the ones already registered. The name is
    /// `'static` because it is how logs, status and errors will call the strategy for the life of
    /// every supervisor that uses it.
    pub fn register<F>(
        &mut self,
        name: &'static str,
        constructor: F,
    ) -> Result<(), RegistrationError>
    where
        F: Fn(&StrategyContext<'_>) -> Result<RestartRecipient, NotApplicable>
            + Send
            + Sync
            + 'static,
    {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(RegistrationError::InvalidName { name });
        }
        if self.contains(name) {
            return Err(RegistrationError::Duplicate { name });
        }
        self.insert(name, constructor);
        Ok(())
    }

    /// Every registered name, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|(name, _)| *name)
    }

    /// Whether a strategy is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|(registered, _)| *registered == name)
    }

    /// Checks a selection without building anything: every name registered, none twice, at least
    /// one. Answers the registered spelling of each name, in the selection's order.
    pub fn check(&self, selection: &[String]) -> Result<Vec<&'static str>, SelectionError> {
        if selection.is_empty() {
            return Err(SelectionError::Empty {
                registered: self.names().collect(),
            });
        }
        let mut resolved: Vec<&'static str> = Vec::with_capacity(selection.len());
        for name in selection {
            let Some(registered) = self.names().find(|registered| registered == name) else {
                return Err(SelectionError::Unknown {
                    name: name.clone(),
                    registered: self.names().collect(),
                });
            };
            if resolved.contains(&registered) {
                return Err(SelectionError::Duplicate { name: name.clone() });
            }
            resolved.push(registered);
        }
        Ok(resolved)
    }

    fn constructor(&self, name: &str) -> Option<&Constructor> {
        self.entries
            .iter()
            .find(|(registered, _)| *registered == name)
            .map(|(_, constructor)| constructor)
    }

    /// The strategies a supervisor asks, in order, started now (see the module docs for the
    /// rules). Must run inside an actix system.
    pub(crate) fn build(
        &self,
        selection: Option<&[String]>,
        context: &StrategyContext<'_>,
    ) -> Result<Vec<Strategy>, SelectionError> {
        let mut built = Vec::new();
        match selection {
            None => {
                for name in DEFAULT_ORDER {
                    let Some(constructor) = self.constructor(name) else {
                        continue;
                    };
                    match constructor(context) {
                        Ok(recipient) => built.push(Strategy { name, recipient }),
                        Err(reason) => {
                            tracing::debug!(server = %context.server_name(), strategy = name, %reason, "restart strategy skipped");
                        }
                    }
                }
            }
            Some(selection) => {
                for name in self.check(selection)? {
                    let Some(constructor) = self.constructor(name) else {
                        continue;
                    };
                    let recipient = constructor(context)
                        .map_err(|reason| SelectionError::NotApplicable { name, reason })?;
                    built.push(Strategy { name, recipient });
                }
            }
        }
        Ok(built)
    }
}

fn process_kill(context: &StrategyContext<'_>) -> Result<RestartRecipient, NotApplicable> {
    let server = context.server().ok_or_else(|| {
        NotApplicable::new("respawn does not own this server's process (it supervises a URL)")
    })?;
    Ok(ProcessKill::new(server.clone(), context.stop_grace())
        .start()
        .recipient())
}

fn rest_endpoint(context: &StrategyContext<'_>) -> Result<RestartRecipient, NotApplicable> {
    let rest =
        context.config().rest_restart.as_ref().ok_or_else(|| {
            NotApplicable::new("no REST restart endpoint (and token) is configured")
        })?;
    let mut strategy = RestEndpoint::new(
        rest.url.clone(),
        rest.token.expose().to_owned(),
        context.health_url(),
    );
    strategy.ready_timeout = context.ready_timeout();
    Ok(strategy.start().recipient())
}

fn command(context: &StrategyContext<'_>) -> Result<RestartRecipient, NotApplicable> {
    let argv = context
        .config()
        .restart_command
        .as_ref()
        .ok_or_else(|| NotApplicable::new("no restart command is configured"))?;
    let mut strategy = CommandRestart::new(argv.clone(), Some(context.health_url().to_owned()));
    strategy.ready_timeout = context.ready_timeout();
    Ok(strategy.start().recipient())
}
