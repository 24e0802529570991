//! The documentation is checked like code: README.md and every file under
//! docs/ (no server needed; the built `lk-go` binary is).
//!
//! - Every relative link points at a file or directory that exists inside
//!   the repository, and a `#anchor` names a heading of the file it points
//!   at (GitHub's anchor rules: lower case, punctuation dropped, spaces to
//!   `-`, `-1`, `-2` … for repeated headings).
//! - Every command in a fenced code block that runs `lk-go` (after optional
//!   `VAR=value` assignments, through any path ending in `lk-go`) uses only
//!   flags that `lk-go <subcommand> --help` lists.
//! - The CLI reference names every flag of every subcommand.
//!
//! Each check proves first, on a small synthetic markdown text, that it
//! fails on what it is there to catch (a dead link, a wrong anchor, a
//! made-up flag).

use lk_go_tests::{lk_go_bin, target_dir, workspace_root};
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

// ---------------------------------------------------------------------------
// Markdown, as far as these checks need it.

/// A fence line (```` ``` ```` or `~~~`, up to three spaces of indent).
fn fence_marker(line: &str) -> Option<&'static str> {
    let t = line.trim_start_matches(' ');
    if line.len() - t.len() > 3 {
        return None;
    }
    if t.starts_with("```") {
        Some("```")
    } else if t.starts_with("~~~") {
        Some("~~~")
    } else {
        None
    }
}

/// Lines with their 1-based numbers.
type Lines = Vec<(usize, String)>;

/// Splits a markdown text into prose lines and code-block lines.
fn split_code(text: &str) -> (Lines, Lines) {
    let mut prose = Vec::new();
    let mut code = Vec::new();
    let mut open: Option<&'static str> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        match (open, fence_marker(line)) {
            (None, Some(m)) => open = Some(m),
            (Some(o), Some(m)) if o == m && line.trim().trim_start_matches(m).is_empty() => {
                open = None
            }
            (Some(_), _) => code.push((n, line.to_string())),
            (None, None) => prose.push((n, line.to_string())),
        }
    }
    (prose, code)
}

/// A prose line without its inline code spans (`` `…` ``).
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        match after.find(&closing) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                // An unclosed span is literal text.
                out.push_str(&rest[start..start + ticks]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Link targets in prose: inline `[text](target)` / `![alt](target)` and
/// reference definitions `[label]: target`.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let (prose, _) = split_code(text);
    let mut out = Vec::new();
    for (n, line) in prose {
        let line = without_code_spans(&line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(close) = trimmed.find("]:") {
                let target = trimmed[close + 2..].split_whitespace().next().unwrap_or("");
                if !target.is_empty() {
                    out.push((n, target.trim_matches(['<', '>']).to_string()));
                    continue;
                }
            }
        }
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            // The target ends at the matching ')' (targets may hold balanced
            // parentheses).
            let mut depth = 0usize;
            let mut end = after.len();
            for (j, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = j;
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            let inside = after[..end].trim();
            let target = if let Some(stripped) = inside.strip_prefix('<') {
                stripped.split('>').next().unwrap_or("")
            } else {
                // `[x](target "title")`
                inside.split_whitespace().next().unwrap_or("")
            };
            out.push((n, target.to_string()));
            rest = &after[end.min(after.len())..];
        }
    }
    out
}

/// GitHub's anchor for a heading's text.
fn slug(heading: &str) -> String {
    // Links render as their text.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(i) = rest.find("](") {
        let before = &rest[..i];
        text.push_str(before);
        let after = &rest[i + 2..];
        rest = after.find(')').map_or("", |j| &after[j + 1..]);
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every anchor the headings of a markdown text define.
fn anchors(text: &str) -> HashSet<String> {
    let (prose, _) = split_code(text);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = HashSet::new();
    for (_, line) in prose {
        let t = line.trim_start();
        let hashes = t.chars().take_while(|&c| c == '#').count();
        if hashes == 0 || hashes > 6 || !t[hashes..].starts_with(' ') {
            continue;
        }
        let title = t[hashes..].trim().trim_end_matches('#').trim();
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        let anchor = if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        *n += 1;
        out.insert(anchor);
    }
    out
}

/// `a/b/../c` → `a/c`, without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The dead links of markdown file `file` (whose text is `text`) in the
/// tree under `root`: one message per link.
fn dead_links(root: &Path, file: &Path, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let shown = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    for (n, target) in link_targets(text) {
        let is_url = target.contains("://")
            || target.starts_with("mailto:")
            || target.split_once(':').is_some_and(|(scheme, _)| {
                !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic())
            });
        if target.is_empty() {
            problems.push(format!("{shown}:{n}: an empty link target"));
            continue;
        }
        if is_url {
            continue;
        }
        let (path_part, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let dest = if path_part.is_empty() {
            file.to_path_buf()
        } else if let Some(abs) = path_part.strip_prefix('/') {
            root.join(abs)
        } else {
            normalize(&file.parent().unwrap_or(root).join(path_part))
        };
        if !dest.starts_with(root) {
            problems.push(format!(
                "{shown}:{n}: {target} points outside the repository"
            ));
            continue;
        }
        if !dest.exists() {
            problems.push(format!(
                "{shown}:{n}: {target}: {} does not exist",
                dest.strip_prefix(root).unwrap_or(&dest).display()
            ));
            continue;
        }
        if let Some(anchor) = anchor {
            if dest.extension().is_some_and(|e| e == "md") {
                let dest_text = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&dest_text).contains(anchor) {
                    problems.push(format!(
                        "{shown}:{n}: {target}: no heading with anchor #{anchor} in {}",
                        dest.strip_prefix(root).unwrap_or(&dest).display()
                    ));
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Commands in code blocks.

/// Words of a shell line, honouring '…' and "…" quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                any = true;
            }
            None if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            None => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// A shell line without its comment (` #…`, or a line starting with `#`),
/// quotes respected.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev_space => return &line[..i],
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// One `lk-go` invocation found in a code block.
#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    line: usize,
    /// e.g. `["job", "run-script"]`; empty for `lk-go --help`.
    subcommand: Vec<String>,
    flags: Vec<String>,
}

/// The `lk-go` invocations in the code blocks of a markdown text, or a
/// message for one whose subcommand is unknown.
fn invocations(text: &str) -> (Vec<Invocation>, Vec<String>) {
    let (_, code) = split_code(text);
    // Continuation lines (`\` at the end) join the next one.
    let mut joined: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in code {
        let (start, mut acc) = pending.take().unwrap_or((n, String::new()));
        let body = line.trim_end();
        match body.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                pending = Some((start, acc));
            }
            None => {
                acc.push_str(body);
                joined.push((start, acc));
            }
        }
    }
    if let Some(p) = pending {
        joined.push(p);
    }
    let mut found = Vec::new();
    let mut unknown = Vec::new();
    for (n, line) in joined {
        let line = line.trim_start();
        let line = line.strip_prefix("$ ").unwrap_or(line);
        let line = strip_comment(line);
        for segment in line.split(['|', ';', '&']) {
            let words = shell_words(segment);
            let mut it = words
                .iter()
                .skip_while(|w| {
                    w.as_str() == "env"
                        || w.split_once('=').is_some_and(|(k, _)| {
                            !k.is_empty()
                                && !k.starts_with('-')
                                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        })
                })
                .peekable();
            let Some(program) = it.next() else { continue };
            if program != "lk-go" && !program.ends_with("/lk-go") {
                continue;
            }
            let rest: Vec<&String> = it.collect();
            let first = rest.first().map(|s| s.as_str());
            let subcommand: Vec<String> = match first {
                Some("worker") => vec!["worker".into()],
                Some(group @ ("job" | "plugin")) => match rest.get(1).map(|s| s.as_str()) {
                    Some(sub) if !sub.starts_with('-') => vec![group.into(), sub.into()],
                    _ => vec![group.into()],
                },
                // A table row or a diagram that names lk-go ("lk-go 10 …",
                // "lk-go CLI ──►") is not a command; one that passes flags
                // to an unknown subcommand is a mistake.
                Some(other) if !other.starts_with('-') => {
                    if rest.iter().any(|w| w.starts_with("--")) {
                        unknown.push(format!(
                            "line {n}: `lk-go {other}` is not an lk-go subcommand"
                        ));
                    }
                    continue;
                }
                _ => vec![],
            };
            let flags = rest
                .iter()
                .filter(|w| w.starts_with("--") && w.len() > 2)
                .map(|w| w.split('=').next().unwrap_or(w).to_string())
                .collect();
            found.push(Invocation {
                line: n,
                subcommand,
                flags,
            });
        }
    }
    (found, unknown)
}

/// The `--flags` an `lk-go … --help` output defines (its option lines).
fn help_flags(help: &str) -> HashSet<String> {
    let mut flags = HashSet::new();
    for line in help.lines() {
        let t = line.trim_start();
        if !t.starts_with('-') {
            continue;
        }
        for word in t.split([' ', ',']) {
            if let Some(name) = word.strip_prefix("--") {
                let name: String = name
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                if !name.is_empty() {
                    flags.insert(format!("--{name}"));
                }
            }
        }
    }
    flags
}

/// `lk-go <subcommand> --help`, run once per subcommand.
struct Help {
    cache: HashMap<Vec<String>, Result<HashSet<String>, String>>,
}

impl Help {
    fn new() -> Help {
        Help {
            cache: HashMap::new(),
        }
    }

    fn flags(&mut self, subcommand: &[String]) -> Result<HashSet<String>, String> {
        self.cache
            .entry(subcommand.to_vec())
            .or_insert_with(|| {
                let out = Command::new(lk_go_bin())
                    .args(subcommand)
                    .arg("--help")
                    .output()
                    .map_err(|e| format!("could not run lk-go: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "`lk-go {} --help` failed: {}",
                        subcommand.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(help_flags(&String::from_utf8_lossy(&out.stdout)))
            })
            .clone()
    }
}

/// Every flag in an `lk-go` command of `text`'s code blocks that its
/// subcommand's `--help` does not list: one message each.
fn unknown_flags(shown: &str, text: &str, help: &mut Help) -> Vec<String> {
    let (found, unknown) = invocations(text);
    let mut problems: Vec<String> = unknown
        .into_iter()
        .map(|u| format!("{shown}: {u}"))
        .collect();
    for inv in found {
        match help.flags(&inv.subcommand) {
            Err(e) => problems.push(format!("{shown}:{}: {e}", inv.line)),
            Ok(known) => {
                for flag in inv.flags {
                    if !known.contains(&flag) {
                        problems.push(format!(
                            "{shown}:{}: `lk-go {}` has no flag {flag}",
                            inv.line,
                            inv.subcommand.join(" ")
                        ));
                    }
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// The files.

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "md") {
                out.push(p);
            }
        }
    }
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut files);
    files
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------
// The checks proven on synthetic input first.

#[test]
fn github_anchors_are_computed_as_github_does() {
    assert_eq!(
        slug("A lost server: resume, rejoin, or give up"),
        "a-lost-server-resume-rejoin-or-give-up"
    );
    assert_eq!(slug("`GET /`: health"), "get--health");
    assert_eq!(slug("RPC (ABI 1.4)"), "rpc-abi-14");
    assert_eq!(slug("`lk-go job run-script`"), "lk-go-job-run-script");
    assert_eq!(slug("See [the guide](x.md) now"), "see-the-guide-now");
    let a = anchors("# Title\n## Same\n```\n## not a heading\n```\n## Same\n#nospace\n");
    let expected: HashSet<String> = ["title", "same", "same-1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(a, expected);
}

#[test]
fn the_link_check_catches_dead_files_and_anchors() {
    let dir = target_dir().join("docs-check-selftest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/b.md"), "# B\n## Real heading\n").unwrap();
    std::fs::write(dir.join("c.txt"), "x").unwrap();
    let a = "# Top heading\n\
             [ok](sub/b.md) [ok anchor](sub/b.md#real-heading) [dir](sub) [txt](c.txt#anything)\n\
             [self](#top-heading) [web](https://example.com/x#y) [mail](mailto:a@b.c)\n\
             [dead](missing.md)\n\
             [bad anchor](sub/b.md#nope)\n\
             [bad self](#nowhere)\n\
             [outside](../../../../../../../../etc/passwd)\n\
             ref: [label]: gone-ref.md\n\
             [label2]: also-gone.md\n\
             `[in code](gone-span.md)` and ``[x](gone-double.md)``\n\
             ```md\n[in a block](gone-block.md)\n```\n";
    let file = dir.join("a.md");
    std::fs::write(&file, a).unwrap();
    let problems = dead_links(&dir, &file, a);
    let joined = problems.join("\n");
    assert_eq!(problems.len(), 5, "{joined}");
    for needle in [
        "a.md:4: missing.md",
        "a.md:5: sub/b.md#nope",
        "a.md:6: #nowhere",
        "points outside the repository",
        "a.md:9: also-gone.md",
    ] {
        assert!(joined.contains(needle), "{needle} not reported: {joined}");
    }
    for quiet in ["gone-span", "gone-double", "gone-block", "example.com"] {
        assert!(!joined.contains(quiet), "{quiet} reported: {joined}");
    }
}

#[test]
fn the_flag_check_catches_made_up_flags() {
    let md = "Prose is not checked: lk-go worker --prose-flag\n\
              ```sh\n\
              lk-go worker x.so --agent-name a --made-up-flag\n\
              LIVEKIT_URL=ws://x target/debug/lk-go job run-script x.so --room r --bogus=1 \\\n\
              \x20   --detached --also-fake\n\
              # lk-go worker --in-comment\n\
              lk-go plugin inspect x.so   # --comment-flag\n\
              cargo xtask bench --runs 5 && ./target/debug/lk-go --help\n\
              lk-go job run-script x.so --room=r --url ws://a --url=ws://b --log-format json\n\
              lk-go frobnicate --x\n\
              lk-go 10 jobs 33 %   (a table row, not a command)\n\
              ```\n";
    let (found, unknown) = invocations(md);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert_eq!(found[1].subcommand, ["job", "run-script"]);
    assert_eq!(found[1].line, 4, "a continued command keeps its first line");
    assert_eq!(
        found[1].flags,
        ["--room", "--bogus", "--detached", "--also-fake"]
    );
    assert!(found[3].subcommand.is_empty());
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    let mut help = Help::new();
    let problems = unknown_flags("t.md", md, &mut help);
    let joined = problems.join("\n");
    assert_eq!(problems.len(), 4, "{joined}");
    for needle in [
        "t.md:3: `lk-go worker` has no flag --made-up-flag",
        "t.md:4: `lk-go job run-script` has no flag --bogus",
        "t.md:4: `lk-go job run-script` has no flag --also-fake",
        "lk-go frobnicate",
    ] {
        assert!(joined.contains(needle), "{needle} not reported: {joined}");
    }
    for quiet in [
        "--prose-flag",
        "--in-comment",
        "--comment-flag",
        "--runs",
        "--room=",
        "--url",
    ] {
        assert!(!joined.contains(quiet), "{quiet} reported: {joined}");
    }
}

// ---------------------------------------------------------------------------
// The real files.

#[test]
fn no_relative_link_in_the_docs_is_dead() {
    let root = workspace_root();
    let files = markdown_files();
    assert!(files.len() > 5, "README.md and docs/: {files:?}");
    let problems: Vec<String> = files
        .iter()
        .flat_map(|f| dead_links(&root, f, &read(f)))
        .collect();
    assert!(problems.is_empty(), "dead links:\n{}", problems.join("\n"));
}

#[test]
fn every_lk_go_command_in_the_docs_uses_real_flags() {
    let root = workspace_root();
    let mut help = Help::new();
    let mut commands = 0;
    let mut problems = Vec::new();
    for f in markdown_files() {
        let text = read(&f);
        commands += invocations(&text).0.len();
        let shown = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
        problems.extend(unknown_flags(&shown, &text, &mut help));
    }
    assert!(
        commands >= 20,
        "only {commands} lk-go commands found in code blocks"
    );
    assert!(
        problems.is_empty(),
        "made-up flags:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_cli_reference_names_every_flag() {
    let root = workspace_root();
    let cli = read(&root.join("docs/reference/cli.md"));
    let mut help = Help::new();
    let mut missing = Vec::new();
    for sub in [
        &["job", "run-script"][..],
        &["job", "run-assigned"],
        &["worker"],
        &["plugin", "inspect"],
        &["plugin", "new"],
    ] {
        let sub: Vec<String> = sub.iter().map(|s| s.to_string()).collect();
        let flags = help.flags(&sub).unwrap_or_else(|e| panic!("{e}"));
        for flag in flags {
            if flag != "--help" && !cli.contains(&format!("`{flag}")) {
                missing.push(format!("lk-go {} {flag}", sub.join(" ")));
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "docs/reference/cli.md does not name:\n{}",
        missing.join("\n")
    );
}
