//! nginx for the proxy tests: Debian's binary run in the foreground with its own prefix in a
//! temp dir (config, pid file, temp paths), on free loopback ports, stopped by its PID.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Helper, project_dir, runs, signal};

/// The nginx binary, if one runs (`nginx -v`).
pub fn nginx_binary() -> Option<String> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .find(|n| runs(n, &["-v"]))
        .map(str::to_owned)
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The `## title` section of README.md (up to the next `## ` heading).
pub fn readme_section(title: &str) -> String {
    let readme = std::fs::read_to_string(project_dir().join("README.md")).expect("read README.md");
    readme
        .split("\n## ")
        .find(|s| s.starts_with(title))
        .unwrap_or_else(|| panic!("README.md has a `## {title}` section"))
        .to_owned()
}

/// The body of the first ```` ```lang ```` block in `text`.
pub fn first_block(text: &str, lang: &str) -> String {
    let fence = format!("```{lang}\n");
    let start = text
        .find(&fence)
        .unwrap_or_else(|| panic!("no ```{lang} block"))
        + fence.len();
    let len = text[start..].find("\n```").expect("the block ends");
    text[start..start + len].to_owned()
}

/// nginx's prefix directory (config, pid, temp paths), removed when dropped.
pub struct NginxDir(pub PathBuf);

impl NginxDir {
    pub fn new() -> NginxDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("sse-nginx-{}-{nanos}", std::process::id()));
        for sub in ["", "body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).expect("create temp dir");
            // nginx started as root runs its workers as `nobody`.
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))
                .expect("chmod temp dir");
        }
        NginxDir(dir)
    }

    /// The `http {}` lines that point nginx's temp paths into this directory.
    pub fn temp_paths() -> &'static str {
        "client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fastcgi;\n\
         uwsgi_temp_path uwsgi; scgi_temp_path scgi;\n"
    }
}

impl Drop for NginxDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nginx in the foreground; stopped by its PID (SIGTERM, then SIGKILL) when dropped.
pub struct Nginx {
    helper: Helper,
}

impl Nginx {
    /// Runs `bin -p dir -c conf` in the foreground (`daemon off`), its pid file in `dir` and
    /// its error log on stderr.
    pub fn start(bin: &str, dir: &Path, conf: &Path) -> Nginx {
        let globals = format!(
            "daemon off; pid {}; error_log stderr;",
            dir.join("nginx.pid").display()
        );
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(dir)
            .arg("-e")
            .arg("stderr")
            .arg("-c")
            .arg(conf)
            .arg("-g")
            .arg(globals);
        Nginx {
            helper: Helper::spawn(cmd),
        }
    }

    pub fn stop(&mut self) {
        if let Ok(None) = self.helper.child.try_wait() {
            signal(self.helper.child.id(), 15);
            if self.helper.finish(Duration::from_secs(5)).is_none() {
                eprintln!("nginx ignored SIGTERM for 5 s; killed");
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
