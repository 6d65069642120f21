//! The settings that take one of a few words (`--log-format`, `--containment`,
//! `--gpu-release`, `--resume`): each a small enum that parses its words and says which it expects.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How respawn writes its own logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        }
    }
}

/// How the model server's processes are contained: the strongest available, or one mode forced.
/// `docs/RELIABILITY.md` describes the modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Containment {
    /// A cgroup per generation where respawn may create one, else the guardian.
    #[default]
    Auto,
    /// A cgroup per generation, or refuse to start.
    Cgroup,
    /// The guardian tracks every descendant, even where a cgroup could be created.
    Guardian,
}

impl Containment {
    /// What the process-owning actor is asked for.
    pub fn request(self) -> respawn_backends::ContainmentRequest {
        match self {
            Containment::Auto => respawn_backends::ContainmentRequest::Auto,
            Containment::Cgroup => respawn_backends::ContainmentRequest::Cgroup,
            Containment::Guardian => respawn_backends::ContainmentRequest::Guardian,
        }
    }
}

impl FromStr for Containment {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Containment::Auto),
            "cgroup" => Ok(Containment::Cgroup),
            "guardian" => Ok(Containment::Guardian),
            _ => Err("expected `auto`, `cgroup` or `guardian`".to_owned()),
        }
    }
}

/// How a restart caused by a hang stops the old generation (an operator's restart, a rolling
/// restart, SIGHUP and respawn's own shutdown always grant `stop_grace`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HangStop {
    /// SIGKILL to every process of the hung generation at once: a server that stopped answering
    /// would not honour SIGTERM, and its grace would be dead time.
    #[default]
    Kill,
    /// SIGTERM first and `stop_grace` to exit, as for an operator's restart.
    Grace,
}

impl FromStr for HangStop {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "kill" => Ok(HangStop::Kill),
            "grace" => Ok(HangStop::Grace),
            _ => Err("expected `kill` or `grace`".to_owned()),
        }
    }
}

/// Whether a restart waits until `nvidia-smi` shows no process of the old generation holding
/// GPU memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GpuRelease {
    /// When `nvidia-smi` is on `PATH`, ask it after every stop (bounded by `release_timeout`).
    #[default]
    Auto,
    /// Never ask.
    Off,
}

impl FromStr for GpuRelease {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(GpuRelease::Auto),
            "off" => Ok(GpuRelease::Off),
            _ => Err("expected `auto` or `off`".to_owned()),
        }
    }
}

/// How a cut stream is continued (`--resume`); `docs/RELIABILITY.md` has the rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Resume {
    /// vLLM's flags when the command is vLLM's, a trailing assistant message otherwise.
    #[default]
    Auto,
    /// A trailing assistant message (llama.cpp's server continues it by default).
    Prefill,
    /// A trailing assistant message with `continue_final_message` and no generation prompt.
    Vllm,
    /// Never resume: a cut stream ends with an error event.
    Off,
}

impl Resume {
    /// The library's setting.
    pub fn mode(self) -> respawn_core::ResumeMode {
        match self {
            Resume::Auto => respawn_core::ResumeMode::Auto,
            Resume::Prefill => respawn_core::ResumeMode::Prefill,
            Resume::Vllm => respawn_core::ResumeMode::Vllm,
            Resume::Off => respawn_core::ResumeMode::Off,
        }
    }
}

impl FromStr for Resume {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Resume::Auto),
            "prefill" => Ok(Resume::Prefill),
            "vllm" => Ok(Resume::Vllm),
            "off" => Ok(Resume::Off),
            _ => Err("expected `auto`, `prefill`, `vllm` or `off`".to_owned()),
        }
    }
}
