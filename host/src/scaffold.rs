//! `lk-go plugin new`: writes a minimal plugin project a third party builds
//! outside this repository — Rust (a cdylib on `lk-plugin-api`), C (the
//! header copied in, a Makefile) or Go (a c-shared module on the Go SDK).
//!
//! Owns: the project templates and where their SDK comes from. Must not
//! touch: loading or running plugins (the project's build is run by its
//! user; `lk-go job run-script` runs the result).
//!
//! Where the SDK comes from, per language:
//! - C: `lk_plugin.h` of this very binary's ABI, written into the project
//!   (the header is the whole C SDK; it is append-only, so a copy stays
//!   valid for every later host of the same major).
//! - Rust: `lk-plugin-api` by path to the lk-go checkout this binary was
//!   built from (`--sdk DIR` to point elsewhere); without a checkout, the
//!   crates.io version of the same number.
//! - Go: the module `lkgo.example/lkgo` is on no proxy: `replace` to
//!   `plugin-api/go` of the checkout (`--sdk DIR`), the offline form.

use std::path::{Path, PathBuf};

/// The header, as this binary speaks it.
const HEADER: &str = include_str!("../../plugin-api/include/lk_plugin.h");
/// The lk-go checkout this binary was built from.
const CHECKOUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    C,
    Go,
}

/// What `plugin new` wrote: the directory, and the two commands a user
/// runs next (printed, and the project's README).
#[derive(Debug)]
pub struct NewProject {
    pub dir: PathBuf,
    pub build: String,
    pub library: String,
}

/// A plugin name: 1–64 bytes of `a-z`, `0-9`, `-`, `_`, starting with a
/// letter (it becomes a crate, module, file and library name).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?}: use 1-64 of a-z, 0-9, '-' and '_', starting with a letter"
        ))
    }
}

/// `--sdk DIR`, checked, as the path the project's build file gets: made
/// absolute against the current directory (go.mod and Cargo.toml resolve
/// a relative path from the new project, not from where `plugin new`
/// ran), and required to be an lk-go checkout (`plugin-api/Cargo.toml`;
/// for Go also `plugin-api/go/go.mod`).
fn sdk_checkout(lang: Lang, sdk: &Path) -> Result<PathBuf, String> {
    let dir = std::path::absolute(sdk).map_err(|e| {
        format!(
            "--sdk {}: {e}; pass the directory of an lk-go checkout",
            sdk.display()
        )
    })?;
    let api = dir.join("plugin-api");
    let go_mod = api.join("go").join("go.mod");
    if !api.join("Cargo.toml").is_file() || (lang == Lang::Go && !go_mod.is_file()) {
        let wanted = if lang == Lang::Go {
            "plugin-api/Cargo.toml and plugin-api/go/go.mod"
        } else {
            "plugin-api/Cargo.toml"
        };
        return Err(format!(
            "--sdk {} is not an lk-go checkout (no {wanted} in {}); pass the directory of your lk-go clone, the one holding plugin-api/ (e.g. --sdk ../lk-go)",
            sdk.display(),
            dir.display()
        ));
    }
    Ok(dir)
}

/// Writes the project for `name` into `dir` (created; it must not exist or
/// be empty). `sdk`: the lk-go checkout to build against (Rust, Go);
/// default: the one this binary was built from.
///
/// Errors: one line (a bad name, a non-empty directory, an I/O failure, an
/// `sdk` that is not an lk-go checkout, no checkout for Go). Nothing is
/// written when the name, the directory or `sdk` is refused.
pub fn write(lang: Lang, name: &str, dir: &Path, sdk: Option<&Path>) -> Result<NewProject, String> {
    validate_name(name)?;
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read {}: {e}; pick another directory", dir.display()))?
            .next()
            .is_none();
        if !empty {
            return Err(format!(
                "{} exists and is not empty; pick another directory",
                dir.display()
            ));
        }
    }
    let checkout = match (sdk, lang) {
        // C copies the header in: it needs no checkout.
        (Some(_), Lang::C) => None,
        (Some(p), _) => Some(sdk_checkout(lang, p)?),
        (None, _) => std::fs::canonicalize(CHECKOUT)
            .ok()
            .filter(|p| p.join("plugin-api").join("Cargo.toml").is_file()),
    };
    let snake = name.replace('-', "_");
    let files: Vec<(String, String)>;
    let (build, library);
    match lang {
        Lang::Rust => {
            let dep = match &checkout {
                Some(c) => format!(
                    "{{ path = {:?} }}",
                    c.join("plugin-api").display().to_string()
                ),
                None => format!("\"{}\"", env!("CARGO_PKG_VERSION")),
            };
            build = "cargo build --release".to_string();
            library = format!("target/release/lib{snake}.so");
            files = vec![
                (
                    "Cargo.toml".to_string(),
                    format!(
                        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
lk-plugin-api = {dep}

# A project of its own, even inside another workspace.
[workspace]
"#
                    ),
                ),
                (
                    "src/lib.rs".to_string(),
                    format!(
                        r#"//! {name}: an lk-go plugin. `run` is called once per job on a thread of its
//! own; its return value is the job's exit code.

use lk_plugin_api::sdk::{{JobContext, NextEvent}};
use std::time::Duration;

fn run(ctx: &JobContext) -> i32 {{
    ctx.info(&format!("{name}: job {{}} in room {{}}", ctx.job_id(), ctx.room_name()));
    loop {{
        match ctx.next_event(Duration::from_secs(1)) {{
            NextEvent::Event(ev) => ctx.info(&format!("{name}: {{}} {{}}", ev.name, ev.participant_identity)),
            NextEvent::ShuttingDown => return 0,
            _ => {{}}
        }}
    }}
}}

lk_plugin_api::export_plugin!(name: "{name}", version: env!("CARGO_PKG_VERSION"), run: run);
"#
                    ),
                ),
            ];
        }
        Lang::C => {
            build = "make".to_string();
            library = format!("lib{snake}.so");
            files = vec![
                ("lk_plugin.h".to_string(), HEADER.to_string()),
                (
                    "Makefile".to_string(),
                    format!(
                        "lib{snake}.so: {snake}.c lk_plugin.h\n\tcc -std=c11 -Wall -Wextra -O2 -shared -fPIC -I. -o $@ {snake}.c\n"
                    ),
                ),
                (
                    format!("{snake}.c"),
                    format!(
                        r#"/* {name}: an lk-go plugin in C. `run` is called once per job on a thread of
 * its own; its return value is the job's exit code. lk_plugin.h says what
 * each host function owns and which thread may call it. */
#include "lk_plugin.h"

#include <stdio.h>
#include <string.h>

static int32_t run(const lk_host_api *api, const lk_job *job) {{
    lk_str room = api->room_name(job);
    char line[256];
    snprintf(line, sizeof line, "{name}: job in room %.*s", (int)room.len, room.ptr);
    api->log(job, LK_LOG_INFO, line, strlen(line));
    lk_event ev;
    for (;;) {{
        int32_t rc = api->next_event(job, 1000, &ev, NULL);
        if (rc == LK_NEXT_SHUTTING_DOWN || rc == LK_NEXT_INVALID) return 0;
        if (rc != LK_NEXT_EVENT) continue; /* timeout, or events missed */
        snprintf(line, sizeof line, "{name}: %.*s", (int)ev.name.len, ev.name.ptr);
        api->log(job, LK_LOG_INFO, line, strlen(line));
        api->event_release(job, &ev);
    }}
}}

static const lk_plugin_descriptor DESCRIPTOR = {{
    LK_PLUGIN_MAGIC, LK_ABI_MAJOR, LK_ABI_MINOR, {{"{name}", {len}}}, {{"0.1.0", 5}}, run}};

const lk_plugin_descriptor *lk_plugin_entry(void) {{ return &DESCRIPTOR; }}
"#,
                        len = name.len()
                    ),
                ),
            ];
        }
        Lang::Go => {
            let Some(c) = &checkout else {
                return Err("the Go SDK (module lkgo.example/lkgo) is on no proxy: give the lk-go checkout with --sdk DIR".to_string());
            };
            build = format!("go build -buildmode=c-shared -o lib{snake}.so .");
            library = format!("lib{snake}.so");
            files = vec![
                (
                    "go.mod".to_string(),
                    format!(
                        "module example.com/{name}\n\ngo 1.22\n\nrequire lkgo.example/lkgo v0.0.0\n\n// The SDK is on no proxy: build against an lk-go checkout.\nreplace lkgo.example/lkgo => {}\n",
                        c.join("plugin-api").join("go").display()
                    ),
                ),
                (
                    "main.go".to_string(),
                    format!(
                        r#"// {name}: an lk-go plugin in Go. Run is called once per job; its return
// value is the job's exit code.
package main

import "lkgo.example/lkgo"

func init() {{ lkgo.Register(lkgo.Plugin{{Name: "{name}", Version: "0.1.0", Run: run}}) }}

func run(jc *lkgo.JobContext) int {{
	jc.Infof("{name}: job %s in room %s", jc.Job.ID, jc.Job.RoomName)
	for ev := range jc.Events() {{ // closed once the job shuts down
		jc.Infof("{name}: %T", ev)
	}}
	return 0
}}

func main() {{}} // -buildmode=c-shared needs it; it never runs
"#
                    ),
                ),
            ];
        }
    }
    let readme = format!(
        "# {name}\n\nAn lk-go plugin. Build: `{build}`. Run: `lk-go job run-script {library} --room test` (a server on :7880), or add `--detached` to run without one.\n"
    );
    let unwritable = |path: &Path, e: std::io::Error| {
        format!(
            "cannot write {}: {e}; pick a directory you can write to",
            path.display()
        )
    };
    std::fs::create_dir_all(dir).map_err(|e| unwritable(dir, e))?;
    for (file, text) in files.iter().chain([&("README.md".to_string(), readme)]) {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| unwritable(parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| unwritable(path.as_path(), e))?;
    }
    Ok(NewProject {
        dir: dir.to_path_buf(),
        build,
        library,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_file_names_safely() {
        assert!(validate_name("hello-agent_2").is_ok());
        for bad in ["", "Hello", "2x", "a b", "a/b", "ünï", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    /// A scratch directory of this test process, removed first.
    fn scratch(what: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lk-go-scaffold-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_sdk_without_plugin_api_is_refused_before_anything_is_written() {
        let root = scratch("bad-sdk");
        let sdk = root.join("not-a-checkout");
        std::fs::create_dir_all(&sdk).unwrap();
        for lang in [Lang::Rust, Lang::Go] {
            let dir = root.join(format!("{lang:?}"));
            let e = write(lang, "hello", &dir, Some(sdk.as_path())).unwrap_err();
            assert!(
                e.starts_with("--sdk ")
                    && e.contains("plugin-api/Cargo.toml")
                    && e.contains("; pass"),
                "{lang:?}: {e}"
            );
            assert!(!e.contains('\n'), "{lang:?}: one line: {e}");
            assert!(!dir.exists(), "{lang:?}: nothing may be written");
        }
        // C needs no checkout: --sdk is not looked at.
        let c = write(Lang::C, "hello", &root.join("c"), Some(sdk.as_path())).unwrap();
        assert!(c.dir.join("hello.c").is_file());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_relative_sdk_is_written_as_an_absolute_path() {
        // cargo runs unit tests in the package's directory (host/), so ".."
        // is this checkout, given relative to the current directory.
        let root = scratch("relative-sdk");
        let dir = root.join("hello-go");
        write(Lang::Go, "hello-go", &dir, Some(Path::new(".."))).unwrap();
        let go_mod = std::fs::read_to_string(dir.join("go.mod")).unwrap();
        let replaced = go_mod
            .lines()
            .find_map(|l| l.strip_prefix("replace lkgo.example/lkgo => "))
            .unwrap_or_else(|| panic!("no replace line: {go_mod}"));
        let replaced = Path::new(replaced);
        assert!(replaced.is_absolute(), "{go_mod}");
        assert!(replaced.join("go.mod").is_file(), "{go_mod}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
