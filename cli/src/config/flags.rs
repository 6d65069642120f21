//! The flags of `respawn serve` as a configuration layer: the top one.

use super::error::ConfigError;
use super::layer::Layer;
use super::value::{parse_argv, parse_names};
use crate::cli::ServeArgs;

/// The values the flags give. clap has already parsed the typed ones; what is left is the
/// command (which must be valid Unicode) and the one-line argvs.
pub(crate) fn layer(args: &ServeArgs) -> Result<Layer, ConfigError> {
    let command = if args.command.is_empty() {
        None
    } else {
        let words = args
            .command
            .iter()
            .map(|word| {
                word.to_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ConfigError::BadValue {
                        option: "COMMAND".to_owned(),
                        value: word.to_string_lossy().into_owned(),
                        expected: "arguments that are valid UTF-8".to_owned(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Some(words)
    };
    let argv = |option: &str, text: &Option<String>| {
        text.as_deref()
            .map(|text| {
                parse_argv(text).map_err(|expected| ConfigError::BadValue {
                    option: option.to_owned(),
                    value: text.to_owned(),
                    expected,
                })
            })
            .transpose()
    };
    Ok(Layer {
        name: args.supervision.name.clone(),
        listen: args.listen,
        port: args.supervision.port,
        command,
        shell: args.supervision.shell,
        upstream: args.upstream.clone(),
        health_path: args.supervision.health_path.clone(),
        health_interval: args.supervision.health_interval,
        health_timeout: args.supervision.health_timeout,
        unhealthy_after: args.supervision.unhealthy_after,
        request_timeout: args.supervision.request_timeout,
        stall_timeout: args.supervision.stall_timeout,
        max_request_time: args.supervision.max_request_time,
        canary_interval: args.supervision.canary_interval,
        canary_timeout: args.supervision.canary_timeout,
        canary_body: args.supervision.canary_body.clone(),
        progress_metric: args.supervision.progress_metric.clone(),
        progress_timeout: args.supervision.progress_timeout,
        startup_timeout: args.supervision.startup_timeout,
        stop_grace: args.supervision.stop_grace,
        hang_stop: args.supervision.hang_stop,
        max_restarts: args.supervision.max_restarts,
        restart_window: args.supervision.restart_window,
        stable_after: args.supervision.stable_after,
        retries: args.supervision.retries,
        poison_after: args.supervision.poison_after,
        quarantine_ttl: args.supervision.quarantine_ttl,
        resume: args.supervision.resume,
        resume_limit: args.supervision.resume_limit,
        enable_restart: None,
        admin_token: args.admin_token.clone(),
        restart_strategies: args
            .supervision
            .restart_strategies
            .as_deref()
            .map(|text| {
                parse_names(text).map_err(|expected| ConfigError::BadValue {
                    option: "--restart-strategies".to_owned(),
                    value: text.to_owned(),
                    expected,
                })
            })
            .transpose()?,
        restart_url: args.supervision.restart_url.clone(),
        restart_token: args.supervision.restart_token.clone(),
        restart_command: argv("--restart-command", &args.supervision.restart_command)?,
        release_check: argv("--release-check", &args.supervision.release_check)?,
        gpu_release: args.supervision.gpu_release,
        release_timeout: args.supervision.release_timeout,
        containment: args.supervision.containment,
        pass_secrets: args.supervision.pass_secrets,
        max_body_size: args.max_body_size,
        max_waiting: args.max_waiting,
        max_waiting_bytes: args.max_waiting_bytes,
        max_wait_time: args.max_wait_time,
        header_timeout: args.header_timeout,
        workers: args.workers,
        log_format: args.log_format,
        replicas: args.replicas,
        start_stagger: args.start_stagger,
        min_ready: args.min_ready,
    })
}
