//! The command-line flags of private topics, flattened into [`crate::config::Cli`], and their
//! conversion into an [`AuthConfig`] (reading the key file).

use std::path::PathBuf;

use super::cache::{DEFAULT_CACHE_ENTRIES, MAX_CACHE_ENTRIES};
use super::{AuthConfig, AuthOptions, ConfigError, DEFAULT_VERIFY_QUEUE, MAX_VERIFY_QUEUE};

/// `--jwt-*`, `--public-topics`, `--allow-origin`: see README, "Private topics".
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// HS256 key for tokens (at least 32 bytes); prefer the environment variable.
    #[arg(long, env = "SSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key for tokens: RSA (RS256) or EC P-256 (ES256).
    #[arg(long, env = "SSE_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// Tokens must carry this value in `aud`.
    #[arg(long, env = "SSE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Tokens must carry this `iss`.
    #[arg(long, env = "SSE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Topics anyone may subscribe to once a key is configured (default: the default stream;
    /// `''` names it; the flag alone makes every topic private).
    #[arg(long, env = "SSE_PUBLIC_TOPICS", num_args = 0.., value_delimiter = ',', value_name = "PATTERN")]
    pub public_topics: Option<Vec<String>>,
    /// The cookie that carries the token (default `sse_token`).
    #[arg(long, env = "SSE_JWT_COOKIE", value_name = "NAME")]
    pub jwt_cookie: Option<String>,
    /// Origins whose pages may read answers, with cookies (default `*`, without cookies).
    #[arg(long, env = "SSE_ALLOW_ORIGIN", num_args = 1.., value_delimiter = ',', value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Most verified tokens kept, so a reconnect skips the signature check (0: none).
    #[arg(long, env = "SSE_JWT_CACHE", value_name = "N", default_value_t = DEFAULT_CACHE_ENTRIES as u32, value_parser = clap::value_parser!(u32).range(0..=MAX_CACHE_ENTRIES as i64))]
    pub jwt_cache: u32,
    /// Most RS256/ES256 token checks waiting for the verifier thread; past it, 503 (0: check
    /// every signature on the reactor).
    #[arg(long, env = "SSE_JWT_VERIFY_QUEUE", value_name = "N", default_value_t = DEFAULT_VERIFY_QUEUE as u32, value_parser = clap::value_parser!(u32).range(0..=MAX_VERIFY_QUEUE as i64))]
    pub jwt_verify_queue: u32,
}

impl Default for AuthArgs {
    /// What clap gives with none of these flags (and no `SSE_*` variable).
    fn default() -> AuthArgs {
        AuthArgs {
            jwt_secret: None,
            jwt_public_key: None,
            jwt_audience: None,
            jwt_issuer: None,
            public_topics: None,
            jwt_cookie: None,
            allow_origin: Vec::new(),
            jwt_cache: DEFAULT_CACHE_ENTRIES as u32,
            jwt_verify_queue: DEFAULT_VERIFY_QUEUE as u32,
        }
    }
}

impl AuthArgs {
    /// Reads the key file and validates everything; `publish_token` is `--publish-token`.
    pub fn build(&self, publish_token: Option<String>) -> Result<AuthConfig, ConfigError> {
        let jwt_public_key_pem = match &self.jwt_public_key {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                ConfigError(format!(
                    "--jwt-public-key {}: cannot read: {e}",
                    path.display()
                ))
            })?),
        };
        AuthConfig::new(AuthOptions {
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key_pem,
            jwt_audience: self.jwt_audience.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            public_topics: self.public_topics.clone(),
            jwt_cookie: self.jwt_cookie.clone(),
            allow_origins: self.allow_origin.clone(),
            publish_token,
            jwt_cache: Some(self.jwt_cache as usize),
            jwt_verify_queue: Some(self.jwt_verify_queue as usize),
            hs256_off_reactor: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        auth: AuthArgs,
    }

    fn parse(args: &[&str]) -> AuthArgs {
        Cmd::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .expect("parses")
            .auth
    }

    #[test]
    fn public_topics_absent_empty_or_listed() {
        assert_eq!(parse(&[]).public_topics, None);
        assert_eq!(parse(&["--public-topics"]).public_topics, Some(vec![]));
        assert_eq!(
            parse(&["--public-topics", "", "news/*"]).public_topics,
            Some(vec![String::new(), "news/*".into()])
        );
    }

    #[test]
    fn unreadable_key_file_is_a_config_error() {
        let args = parse(&["--jwt-public-key", "/nonexistent/key.pem"]);
        let err = args.build(None).expect_err("refused");
        assert!(err.0.contains("--jwt-public-key"), "{}", err.0);
        let pem = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/auth/testdata/rsa-public.pem"
        );
        let ok = parse(&["--jwt-public-key", pem])
            .build(None)
            .expect("valid");
        assert!(ok.tokens_enabled());
    }
}
