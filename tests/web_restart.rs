//! `POST /restart` of `respawn::web`, driven through `respawn mock` (which embeds it): the
//! bearer-token rules, the 202, the cleanup hook and the documented exit code.

use std::time::Duration;

mod mock_process;

use mock_process::{Answer, Mock};

const TOKEN: &str = "test-token-4f9a2c";

fn restart(mock: &Mock, authorization: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    mock.request("POST", "/restart", &headers, "", Duration::from_secs(10))
        .expect("/restart answers")
}

#[test]
fn restart_refuses_missing_and_wrong_tokens() {
    let mut mock = Mock::start_with_env(&[], &[("RESPAWN_ADMIN_TOKEN", TOKEN)]);
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some(TOKEN),
        Some("Bearer test-token-4f9a2"),
        Some("Basic dGVzdA=="),
    ] {
        let answer = restart(&mock, auth);
        assert_eq!(answer.status, 401, "{auth:?}");
        assert!(
            answer
                .header("www-authenticate")
                .is_some_and(|v| v.to_ascii_lowercase().starts_with("bearer")),
            "{:?}",
            answer.headers
        );
    }
    assert_eq!(mock.get("/health").expect("an answer").status, 200);
    assert!(
        mock.wait_exit(Duration::from_millis(200)).is_none(),
        "still running"
    );
    assert!(!mock.logged(TOKEN), "the token never appears in logs");
}

#[test]
fn restart_refuses_everyone_when_no_token_is_configured() {
    let mut mock = Mock::start(&[]);
    let answer = restart(&mock, Some("Bearer anything"));
    assert_eq!(answer.status, 401);
    assert!(
        answer.text().contains("no admin token is configured"),
        "{}",
        answer.text()
    );
    let answer = restart(&mock, None);
    assert_eq!(answer.status, 401);
    assert!(
        mock.wait_exit(Duration::from_millis(200)).is_none(),
        "still running"
    );
}

#[test]
fn restart_with_the_right_token_answers_202_runs_cleanup_and_exits_75() {
    let mut mock = Mock::start_with_env(&[], &[("RESPAWN_ADMIN_TOKEN", TOKEN)]);
    assert_eq!(mock.get("/health").expect("an answer").status, 200);
    let answer = restart(&mock, Some(&format!("Bearer {TOKEN}")));
    assert_eq!(answer.status, 202, "{answer:?}");
    let status = mock
        .wait_exit(Duration::from_secs(30))
        .expect("the process exits");
    assert_eq!(status.code(), Some(respawn::web::EXIT_RESTART));
    assert_eq!(respawn::web::EXIT_RESTART, 75);
    assert!(mock.logged("cleanup hook ran"));
    assert!(!mock.logged(TOKEN), "the token never appears in logs");
}

#[test]
fn restart_works_on_a_wedged_server_and_the_exit_code_is_configurable() {
    let mut mock = Mock::start_with_env(
        &["--wedge-on", "POISON", "--restart-exit-code", "3"],
        &[("RESPAWN_ADMIN_TOKEN", TOKEN)],
    );
    let poison = r#"{"messages":[{"role":"user","content":"POISON"}]}"#;
    assert!(mock
        .request(
            "POST",
            "/v1/chat/completions",
            &[],
            poison,
            Duration::from_secs(1)
        )
        .is_none());
    let answer = restart(&mock, Some(&format!("Bearer {TOKEN}")));
    assert_eq!(answer.status, 202);
    let status = mock
        .wait_exit(Duration::from_secs(30))
        .expect("the process exits");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn token_comparison_is_exact() {
    let token = respawn::auth::AdminToken::new(TOKEN).expect("valid");
    assert!(token.verify_header(Some(format!("Bearer {TOKEN}").as_bytes())));
    assert!(!token.verify_header(Some(b"Bearer test-token-4f9a2d")));
    assert!(!token.verify_header(Some(b"Bearer test-token-4f9a2")));
    assert!(!token.verify_header(Some(b"Bearer test-token-4f9a2c-and-more")));
    assert!(
        !token.verify_header(Some(TOKEN.as_bytes())),
        "missing the Bearer scheme"
    );
    assert!(!token.verify_header(Some(b"")));
    assert!(!token.verify_header(None));
}
