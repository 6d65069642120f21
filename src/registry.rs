//! The `Registry`: a server's name → its supervisor's handles.
//!
//! Built explicitly at start-up and passed to whoever needs it (an actix-web app as `Data`, a
//! batch runner, a test). It replaces a process-wide "current server manager" global: two
//! registries in one process never see each other, and there is no `static` state to reset.

use std::collections::BTreeMap;

use crate::supervisor::Supervisor;

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A supervisor of that name is already registered.
    #[error("a server named `{name}` is already registered")]
    DuplicateName {
        /// The name.
        name: String,
    },
}

/// Supervisors by name.
#[derive(Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, Supervisor>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a supervisor under its own name.
    pub fn register(&mut self, supervisor: Supervisor) -> Result<(), RegistryError> {
        let name = supervisor.name().to_owned();
        if self.entries.contains_key(&name) {
            return Err(RegistryError::DuplicateName { name });
        }
        self.entries.insert(name, supervisor);
        Ok(())
    }

    /// The supervisor called `name`.
    pub fn get(&self, name: &str) -> Option<&Supervisor> {
        self.entries.get(name)
    }

    /// Removes and returns the supervisor called `name`.
    pub fn remove(&mut self, name: &str) -> Option<Supervisor> {
        self.entries.remove(name)
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Every supervisor, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Supervisor)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many supervisors are registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
