//! Loading policy files: patterns to files, files to parsed policies with warden's ids, and strict validation
//! against the schema. Every problem in every file is collected, with its `file:line:column`, before giving up.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Effect, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use crate::error::{PolicyError, Position, Problem, ProblemKind};

/// A policy as loaded: the Cedar policy (renamed to warden's id) and what warden keeps beside it.
pub(crate) struct LoadedPolicy {
    pub policy: Policy,
    pub id: Arc<str>,
    pub effect: Effect,
    /// `@approval("<group>")` with its `@approvals` and `@approval_ttl`, on a `forbid`.
    pub approval: Option<crate::ApprovalRule>,
}

/// Everything [`crate::Policies`] is built from.
pub(crate) struct Loaded {
    /// In file order, then in order inside each file.
    pub policies: Vec<LoadedPolicy>,
    pub files: Vec<PathBuf>,
}

/// Expands `patterns` and reads the files, then parses and validates them.
pub(crate) fn load_files(patterns: &[PathBuf], schema: &Schema) -> Result<Loaded, PolicyError> {
    let mut problems = Vec::new();
    let files = expand_patterns(patterns, &mut problems);
    let mut sources = Vec::with_capacity(files.len());
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => sources.push((file.display().to_string(), text)),
            Err(error) => problems.push(Problem {
                file: file.display().to_string(),
                position: None,
                kind: ProblemKind::Unreadable,
                message: format!("cannot read policy file: {error}"),
            }),
        }
    }
    parse_and_validate(&sources, schema, problems)
}

/// Files named by `patterns`, sorted and without duplicates. A pattern with glob characters (`*`, `?`, `[`) is a
/// glob; otherwise it is a file, or a directory standing for every `*.cedar` file directly in it. A pattern that
/// names no policy file is a problem: a typo there would otherwise load nothing and deny everything, silently.
pub(crate) fn expand_patterns(patterns: &[PathBuf], problems: &mut Vec<Problem>) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    for pattern in patterns {
        let before = files.len();
        let text = pattern.to_string_lossy();
        let no_match = |message: String| Problem {
            file: pattern.display().to_string(),
            position: None,
            kind: ProblemKind::NoMatch,
            message,
        };
        if text.contains(['*', '?', '[']) {
            let options = glob::MatchOptions {
                case_sensitive: true,
                require_literal_separator: true,
                // Editor droppings such as emacs' `.#name.cedar` lock files must not be loaded as policies.
                require_literal_leading_dot: true,
            };
            match glob::glob_with(&text, options) {
                Ok(paths) => {
                    for entry in paths {
                        match entry {
                            Ok(path) if path.is_dir() => {}
                            Ok(path) => {
                                files.insert(path);
                            }
                            Err(error) => problems.push(Problem {
                                file: error.path().display().to_string(),
                                position: None,
                                kind: ProblemKind::Unreadable,
                                message: format!("cannot read: {}", error.error()),
                            }),
                        }
                    }
                    if files.len() == before {
                        problems.push(no_match("pattern matches no policy file".to_owned()));
                    }
                }
                Err(error) => problems.push(no_match(format!("invalid pattern: {}", error.msg))),
            }
        } else if pattern.is_dir() {
            match cedar_files_in(pattern) {
                Ok(found) => files.extend(found),
                Err(error) => problems.push(Problem {
                    file: pattern.display().to_string(),
                    position: None,
                    kind: ProblemKind::Unreadable,
                    message: format!("cannot read directory: {error}"),
                }),
            }
            if files.len() == before {
                problems.push(no_match("directory has no .cedar file".to_owned()));
            }
        } else if pattern.exists() {
            files.insert(pattern.clone());
        } else {
            problems.push(no_match("no such policy file or directory".to_owned()));
        }
    }
    files
}

fn cedar_files_in(directory: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let path = entry?.path();
        let is_hidden = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if !is_hidden && path.extension().is_some_and(|extension| extension == "cedar") && !path.is_dir() {
            files.push(path);
        }
    }
    Ok(files)
}

/// Parses every source, names its policies, checks ids are unique, and validates the lot against `schema`.
/// `sources` are `(file label, text)`; `problems` already found (by pattern expansion) are reported with the rest.
pub(crate) fn parse_and_validate(
    sources: &[(String, String)],
    schema: &Schema,
    mut problems: Vec<Problem>,
) -> Result<Loaded, PolicyError> {
    let mut policies: Vec<LoadedPolicy> = Vec::new();
    // Where each id was defined, and which source each policy came from, for later messages.
    let mut defined_at: HashMap<Arc<str>, (usize, Position)> = HashMap::new();
    let mut source_of: HashMap<Arc<str>, usize> = HashMap::new();

    for (source_index, (label, text)) in sources.iter().enumerate() {
        let problem = |position: Option<Position>, kind: ProblemKind, message: String| Problem {
            file: label.clone(),
            position,
            kind,
            message,
        };
        let parsed = match PolicySet::from_str(text) {
            Ok(parsed) => parsed,
            Err(errors) => {
                for error in errors.iter() {
                    let position = first_label_offset(error).map(|offset| position_of(text, offset));
                    problems.push(problem(position, ProblemKind::Syntax, diagnostic_message(error)));
                }
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            problems.push(problem(
                None,
                ProblemKind::Unsupported,
                "policy templates (`?principal`, `?resource`) are not supported".to_owned(),
            ));
        }

        let file_name =
            Path::new(label).file_name().map_or_else(|| label.clone(), |name| name.to_string_lossy().into());
        let mut cursor = 0;
        for policy in policies_in_source_order(&parsed) {
            let policy_text = policy.to_cedar();
            let start = policy_text.as_deref().map_or(cursor, |policy_text| start_of(text, cursor, policy_text));
            let position = position_of(text, start);
            cursor = start + policy_text.map_or(0, |policy_text| policy_text.len());

            let id: Arc<str> = match policy.annotation("id") {
                Some("") => {
                    problems.push(problem(
                        Some(position),
                        ProblemKind::Unsupported,
                        "@id must not be empty".to_owned(),
                    ));
                    continue;
                }
                Some(id) => id.into(),
                None => format!("{file_name}:{}", position.line).into(),
            };
            if let Some((first_source, first_position)) = defined_at.get(&id) {
                let first_label = sources.get(*first_source).map_or("?", |(first_label, _)| first_label.as_str());
                problems.push(problem(
                    Some(position),
                    ProblemKind::DuplicateId,
                    format!(
                        "duplicate policy id \"{id}\", first defined at {first_label}:{}:{}",
                        first_position.line, first_position.column
                    ),
                ));
                continue;
            }
            let approval = match approval_rule(policy) {
                Ok(rule) => rule,
                Err(message) => {
                    problems.push(problem(Some(position), ProblemKind::Unsupported, message));
                    None
                }
            };
            defined_at.insert(id.clone(), (source_index, position));
            source_of.insert(id.clone(), source_index);
            policies.push(LoadedPolicy {
                policy: policy.new_id(PolicyId::new(&*id)),
                effect: policy.effect(),
                id,
                approval,
            });
        }
    }

    let mut set = PolicySet::new();
    for loaded in &policies {
        if let Err(error) = set.add(loaded.policy.clone()) {
            // Ids are unique by construction above; report rather than panic if Cedar disagrees.
            problems.push(Problem {
                file: source_label(sources, &source_of, &loaded.id),
                position: None,
                kind: ProblemKind::DuplicateId,
                message: error.to_string(),
            });
        }
    }
    let validation = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    let mut validation_problems = Vec::new();
    for error in validation.validation_errors() {
        let id: &str = error.policy_id().as_ref();
        let source = source_of.get(id).and_then(|index| sources.get(*index));
        let position = match (source, first_label_offset(error)) {
            (Some((_, text)), Some(offset)) => Some(position_of(text, offset)),
            _ => defined_at.get(id).map(|(_, position)| *position),
        };
        validation_problems.push(Problem {
            file: source_label(sources, &source_of, id),
            position,
            kind: ProblemKind::Validation,
            message: diagnostic_message(error),
        });
    }
    problems.extend(merge_per_action(validation_problems));

    if problems.is_empty() {
        let files = sources.iter().map(|(label, _)| PathBuf::from(label)).collect::<BTreeSet<_>>();
        Ok(Loaded { policies, files: files.into_iter().collect() })
    } else {
        Err(PolicyError::new(problems))
    }
}

/// Cedar type-checks a policy once per action it may apply to, so one mistake in a policy naming no action comes
/// back once per action, differing only in the `Warden::Action::"…"` it names. Report it once, naming them all.
fn merge_per_action(problems: Vec<Problem>) -> Vec<Problem> {
    struct Group {
        first: Problem,
        /// The message around the action name, when it names one.
        around: Option<(String, String)>,
        actions: Vec<String>,
    }
    const ACTION: &str = "Warden::Action::\"";
    let mut groups: Vec<Group> = Vec::new();
    for problem in problems {
        let split = problem.message.split_once(ACTION).and_then(|(before, after)| {
            let (action, rest) = after.split_once('"')?;
            Some(((before.to_owned(), rest.to_owned()), action.to_owned()))
        });
        let (around, action) = match split {
            Some((around, action)) => (Some(around), Some(action)),
            None => (None, None),
        };
        let same = |group: &&mut Group| {
            around.is_some()
                && group.around == around
                && group.first.file == problem.file
                && group.first.position == problem.position
        };
        match groups.iter_mut().find(same) {
            Some(group) => group.actions.extend(action),
            None => groups.push(Group { first: problem, around, actions: action.into_iter().collect() }),
        }
    }
    groups
        .into_iter()
        .map(|mut group| {
            if let (Some((before, after)), true) = (&group.around, group.actions.len() > 1) {
                group.actions.sort();
                let list = group.actions.iter().map(|action| format!("\"{action}\"")).collect::<Vec<_>>().join(", ");
                group.first.message = format!("{before}Warden::Action::{list}{after}");
            }
            group.first
        })
        .collect()
}

fn source_label(sources: &[(String, String)], source_of: &HashMap<Arc<str>, usize>, id: &str) -> String {
    source_of.get(id).and_then(|index| sources.get(*index)).map_or_else(|| "?".to_owned(), |(label, _)| label.clone())
}

/// Cedar names the policies of one parse `policy0`, `policy1`… in source order; its iteration order is a hash
/// map's, so sort by that number.
fn policies_in_source_order(parsed: &PolicySet) -> Vec<&Policy> {
    let mut policies: Vec<&Policy> = parsed.policies().collect();
    policies.sort_by_key(|policy| {
        let id: &str = policy.id().as_ref();
        id.strip_prefix("policy").and_then(|number| number.parse::<usize>().ok()).unwrap_or(usize::MAX)
    });
    policies
}

/// The byte offset where a policy whose exact text is `policy_text` starts, searching from `cursor` (the end of
/// the previous policy). Between two policies there is only white space and `//` comments, so skip those and
/// expect the policy there; fall back to a plain search if Cedar's text ever differs from that expectation.
fn start_of(text: &str, cursor: usize, policy_text: &str) -> usize {
    let rest = text.get(cursor..).unwrap_or("");
    let mut skipped = rest;
    loop {
        let trimmed = skipped.trim_start();
        match trimmed.strip_prefix("//") {
            Some(comment) => skipped = comment.split_once('\n').map_or("", |(_, after)| after),
            None => {
                skipped = trimmed;
                break;
            }
        }
    }
    if skipped.starts_with(policy_text) {
        return cursor + (rest.len() - skipped.len());
    }
    rest.find(policy_text).map_or(cursor, |offset| cursor + offset)
}

/// 1-based line and column (counted in characters) of byte `offset` in `text`.
pub(crate) fn position_of(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    Position { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1 }
}

fn first_label_offset(diagnostic: &dyn Diagnostic) -> Option<usize> {
    diagnostic.labels().and_then(|mut labels| labels.next()).map(|label| label.offset())
}

/// Cedar's message, with its help text when it has one.
fn diagnostic_message(diagnostic: &dyn Diagnostic) -> String {
    match diagnostic.help() {
        Some(help) => format!("{diagnostic} ({help})"),
        None => diagnostic.to_string(),
    }
}

/// The policy's approval annotations, checked: `@approval("<group>")` on a `forbid`, optionally `@approvals("N")`
/// (1 to 10, default 1) and `@approval_ttl("30m")` (seconds `s`, minutes `m`, hours `h` or days `d`; default 1h).
fn approval_rule(policy: &Policy) -> Result<Option<crate::ApprovalRule>, String> {
    let group = policy.annotation("approval");
    let approvals = policy.annotation("approvals");
    let ttl = policy.annotation("approval_ttl");
    let Some(group) = group else {
        return match (approvals, ttl) {
            (None, None) => Ok(None),
            _ => Err("@approvals and @approval_ttl need @approval(\"<approver group>\") beside them".to_owned()),
        };
    };
    if group.is_empty() {
        return Err("@approval needs the approver group, e.g. @approval(\"dba\")".to_owned());
    }
    if policy.effect() != Effect::Forbid {
        return Err("@approval belongs on a forbid (the approval lifts it), not on a permit".to_owned());
    }
    let approvals = match approvals {
        None => 1,
        Some(text) => match text.parse::<u8>() {
            Ok(count) if (1..=10).contains(&count) => count,
            _ => return Err(format!("@approvals(\"{text}\") is not a number of approvers from 1 to 10")),
        },
    };
    let ttl = match ttl {
        None => std::time::Duration::from_secs(3600),
        Some(text) => match parse_ttl(text) {
            Some(ttl) => ttl,
            None => {
                return Err(format!(
                    "@approval_ttl(\"{text}\") is not a duration from 1m to 30d such as \"30m\", \"2h\" or \"1d\""
                ))
            }
        },
    };
    Ok(Some(crate::ApprovalRule { group: Arc::from(group), approvals, ttl }))
}

/// `90s`, `30m`, `2h`, `1d`: from one minute to thirty days.
fn parse_ttl(text: &str) -> Option<std::time::Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let number: u64 = text[..split].parse().ok()?;
    let unit = match &text[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let seconds = number.checked_mul(unit)?;
    (60..=30 * 86_400).contains(&seconds).then(|| std::time::Duration::from_secs(seconds))
}
