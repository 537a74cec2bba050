//! What the tests of `deploy/` share: the shipped `deploy/Containerfile` read into its stages
//! and instructions, and the server's configuration as the image's entrypoint and a pod's args
//! make it (parsed by the server's own flag parser, so a misspelt flag fails here too).
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use arena_server::Config;
use clap::Parser;

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the server crate is in the workspace")
        .to_path_buf()
}

/// A file of the repository as text.
pub fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One instruction: its keyword in capitals and the rest of its (joined) lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
}

/// One `FROM` and what follows it up to the next.
#[derive(Debug, Clone)]
pub struct Stage {
    /// The base image as written (`rust:${RUST_VERSION}-slim-...`).
    pub base: String,
    /// The `AS` name.
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The arguments of every instruction with this keyword, in order.
    pub fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    }

    /// The arguments of the last instruction with this keyword (the one that counts for ENV
    /// names aside: USER, ENTRYPOINT, CMD, STOPSIGNAL).
    pub fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last().copied()
    }

    /// Every `RUN` of the stage, as one text.
    pub fn runs(&self) -> String {
        self.all("RUN").join("\n")
    }
}

/// A Containerfile: the `ARG`s before the first `FROM`, then its stages.
#[derive(Debug, Clone)]
pub struct Containerfile {
    pub global_args: Vec<String>,
    pub stages: Vec<Stage>,
}

impl Containerfile {
    /// Reads the Dockerfile syntax the shipped file uses: `#` comments on lines of their own,
    /// `\` at a line's end continuing the instruction (comment and empty lines inside one are
    /// skipped, as the builders do), keywords in any case. Panics on an instruction before
    /// `FROM` other than `ARG`, which no builder accepts.
    pub fn parse(text: &str) -> Self {
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || trimmed.is_empty() {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head.trim());
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        assert!(
            current.is_empty(),
            "a continued line at the end: {current:?}"
        );
        let mut file = Self {
            global_args: Vec::new(),
            stages: Vec::new(),
        };
        for line in logical {
            let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let keyword = keyword.to_ascii_uppercase();
            let args = args.trim().to_string();
            if keyword == "FROM" {
                let words: Vec<&str> = args.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_] => None,
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => panic!("FROM {args}: expected `FROM IMAGE [AS NAME]`"),
                };
                file.stages.push(Stage {
                    base: words[0].to_string(),
                    name,
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = file.stages.last_mut() {
                stage.instructions.push(Instruction { keyword, args });
            } else {
                assert_eq!(keyword, "ARG", "{keyword} {args} before the first FROM");
                file.global_args.push(args);
            }
        }
        file
    }

    /// `deploy/Containerfile`.
    pub fn shipped() -> Self {
        Self::parse(&read("deploy/Containerfile"))
    }

    /// The stage the image is made of: the last.
    pub fn runtime(&self) -> &Stage {
        self.stages.last().expect("a Containerfile has a FROM")
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no stage named {name}"))
    }

    /// The runtime stage's exec-form ENTRYPOINT, as a list of words.
    pub fn entrypoint(&self) -> Vec<String> {
        let args = self
            .runtime()
            .last("ENTRYPOINT")
            .expect("the runtime stage has an ENTRYPOINT");
        exec_form(args)
            .unwrap_or_else(|| panic!("ENTRYPOINT {args}: not in exec form (a JSON array)"))
    }

    /// The runtime stage's `EXPOSE`d ports as (port, protocol), protocol in lower case.
    pub fn exposed(&self) -> Vec<(u16, String)> {
        self.runtime()
            .all("EXPOSE")
            .iter()
            .flat_map(|a| a.split_whitespace())
            .map(|p| {
                let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                let port = port.parse().unwrap_or_else(|e| panic!("EXPOSE {p}: {e}"));
                (port, proto.to_ascii_lowercase())
            })
            .collect()
    }
}

/// A JSON array of strings (`["a", "b"]`), or `None` for the shell form.
pub fn exec_form(args: &str) -> Option<Vec<String>> {
    serde_json::from_str(args).ok()
}

/// The configuration the server runs with when started by `entrypoint` (the binary, then its
/// flags) followed by `args`: the server's own parser, later flags winning as in the server.
pub fn effective_config(entrypoint: &[String], args: &[String]) -> Config {
    let words = entrypoint.iter().chain(args);
    Config::try_parse_from(words).unwrap_or_else(|e| {
        panic!("the server refuses the image's entrypoint {entrypoint:?} with args {args:?}:\n{e}")
    })
}
