//! The `sluice` binary: `check-config`, and `serve` with a graceful SIGTERM and a reload on SIGHUP.

use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::harness::{cli, fleet, repo_root};

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A loopback port nobody listens on now, for a `serve` child to take.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    l.local_addr().expect("addr").port()
}

#[test]
fn check_config_accepts_the_default_and_names_the_bad_key() {
    let out = sluice()
        .args(["check-config", "--config"])
        .arg(repo_root().join("config/sluice.toml"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[backends]]\nname = \"p\"\naddress = \"127.0.0.1:1\"\nrole = \"primary\"\npool-max = 0\n",
    )
    .expect("write");
    let out = sluice()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("backends[0].pool-max"),
        "{err}"
    );

    // The policy directory is loaded too: a broken policy fails the check, naming its file.
    let policies = crate::harness::PolicyDir::new("check-config");
    policies.plugin("guard", "guard.wasm");
    policies.write(
        "guard.toml",
        b"name = \"guard\"\nkind = \"guard\"\nplugin = \"guard.wasm\"\n[settings]\ndeny-everything = true\n",
    );
    let with_policies = |dir: &std::path::Path| {
        sluice()
            .args(["check-config", "--config"])
            .arg(repo_root().join("config/sluice.toml"))
            .env("SLUICE_POLICIES__DIR", dir)
            .output()
            .expect("run")
    };
    let out = with_policies(&policies.path);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("guard.toml") && err.contains("deny-everything"),
        "{err}"
    );
    policies.write(
        "guard.toml",
        b"name = \"guard\"\nkind = \"guard\"\nplugin = \"guard.wasm\"\n",
    );
    let out = with_policies(&policies.path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("policies: ok (guard (guard))"));

    // An environment variable overrides the file, and is validated too.
    let out = sluice()
        .args(["check-config", "--config"])
        .arg(repo_root().join("config/sluice.toml"))
        .env("SLUICE_FRONTEND__MAX_CONNECTIONS", "0")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frontend.max-connections"));
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let f = fleet();
    let port = free_port();
    let mut child = sluice()
        .args(["serve", "--config"])
        .arg(repo_root().join("config/sluice.toml"))
        .env("SLUICE_FRONTEND__LISTEN", format!("127.0.0.1:{port}"))
        .env("SLUICE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("SLUICE_ROUTING__READ_WRITE_SPLIT", "false")
        .env(
            "SLUICE_BACKENDS",
            format!(
                "[{{name=\"primary\",address=\"127.0.0.1:{}\",role=\"primary\"}}]",
                f.port
            ),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut up = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(up, "sluice did not start listening");
    let (ok, out, err) = cli(addr, "app", "app-secret", &["app"], "SELECT @@port");
    assert!(ok, "{err}");
    if out != f.port.to_string() {
        let _ = child.kill();
        let mut log = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut log);
        }
        panic!(
            "SELECT @@port: {out}, expected {}; gateway log:\n{log}",
            f.port
        );
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "sluice exited with {exit:?}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after SIGTERM"
    );
}

/// SIGHUP reloads the file `serve` was given (here with the file watch off, so the signal is
/// what reloads): a user added to it can log in, the session already in keeps working.
#[test]
fn serve_reloads_its_configuration_on_sighup() {
    let f = fleet();
    let port = free_port();
    let dir = crate::harness::PolicyDir::new("sighup").path;
    let file = dir.join("sluice.toml");
    let text = format!(
        "[frontend]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nenabled = false\n[reload]\nwatch = false\n\
         [[users]]\nname = \"app\"\npassword = \"app-secret\"\n\
         [[backends]]\nname = \"primary\"\naddress = \"127.0.0.1:{}\"\nrole = \"primary\"\n",
        f.port
    );
    std::fs::write(&file, &text).expect("config");
    let mut child = sluice()
        .args(["serve", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluice");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let up = (0..200).any(|_| {
        TcpStream::connect(addr).is_ok() || {
            std::thread::sleep(std::time::Duration::from_millis(25));
            false
        }
    });
    assert!(up, "sluice did not start listening");
    let (ok, _, _) = cli(addr, "hup", "hup-secret", &["app"], "SELECT 1");
    assert!(!ok, "an unknown user logged in");
    std::fs::write(
        &file,
        format!(
            "{text}[[users]]\nname = \"hup\"\npassword = \"hup-secret\"\nbackend-user = \"app\"\nbackend-password = \"app-secret\"\n"
        ),
    )
    .expect("config");
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    // The reload is asynchronous to the signal: poll the login, bounded.
    let mut logged_in = false;
    for _ in 0..200 {
        if cli(addr, "hup", "hup-secret", &["app"], "SELECT 1").0 {
            logged_in = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = child.wait().expect("wait");
    assert!(logged_in, "the user added before SIGHUP cannot log in");
    assert!(exit.success(), "sluice exited with {exit:?}");
}

/// The case files the first-party policies ship (Rust and Python).
fn shipped_case_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = ["plugins", "plugins/python"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo_root().join(d)).expect("plugins"))
        .map(|e| e.expect("entry").path().join("cases.toml"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn policy_test_passes_the_shipped_cases_and_fails_naming_a_changed_one() {
    let built = Command::new(repo_root().join("scripts/build-policies"))
        .output()
        .expect("build the shipped policies");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let files = shipped_case_files();
    assert!(
        files.len() >= 6,
        "every first-party policy has cases: {files:?}"
    );
    let out = sluice()
        .args(["policy", "test"])
        .args(&files)
        .output()
        .expect("run sluice policy test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    for kind in [
        "(guard `guard`)",
        "(router `rw-split`)",
        "(redactor `mask`)",
        "(credentials `secrets`)",
        "(guard `py-guard`)",
        "(credentials `py-credentials`)",
    ] {
        assert!(stdout.contains(kind), "{kind} tested: {stdout}");
    }

    // One case changed to expect something else: that case fails, by name, and the exit is 1.
    let dir = std::env::temp_dir().join(format!("sluice-cases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let original =
        std::fs::read_to_string(repo_root().join("plugins/guard/cases.toml")).expect("cases");
    let changed = original
        .replace(
            "policy = \"../../policies/guard.toml\"",
            &format!(
                "policy = \"{}\"",
                repo_root().join("policies/guard.toml").display()
            ),
        )
        .replacen(
            "name = \"the mysql schema is refused\"\nsql = \"SELECT user, authentication_string FROM mysql.user\"\nexpect = \"deny\"",
            "name = \"the mysql schema is refused\"\nsql = \"SELECT user, authentication_string FROM mysql.user\"\nexpect = \"allow\"",
            1,
        );
    assert_ne!(changed, original);
    let file = dir.join("changed.toml");
    std::fs::write(&file, changed).expect("write");
    let out = sluice()
        .args(["policy", "test"])
        .arg(&file)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.contains("FAIL")).collect();
    assert_eq!(failed.len(), 1, "{stdout}");
    assert!(
        failed[0].contains("the mysql schema is refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("got      deny 1142"),
        "the actual decision: {stdout}"
    );

    // A file it cannot use: exit 2, naming the file and the key.
    std::fs::write(
        &file,
        "policy = \"x.toml\"\nexpekt = 1\n[[case]]\nname = \"a\"\nexpect = \"allow\"\n",
    )
    .expect("write");
    let out = sluice()
        .args(["policy", "test"])
        .arg(&file)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("changed.toml") && stderr.contains("expekt"),
        "{stderr}"
    );
}
