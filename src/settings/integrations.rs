//! Integrations: a shippable.yml-style file (`integrations: hub:` entries) that supplies the region and the
//! branch filter of an ECR integration by name. Explicit settings win over it.
//!
//! Parsed with serde-saphyr, which bounds nesting and size, so a hostile file is an error, never a crash.

use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct File {
    integrations: Option<Sections>,
}

#[derive(Debug, Deserialize)]
struct Sections {
    #[serde(default)]
    hub: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    integration_name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    region: Option<String>,
    branches: Option<Branches>,
}

#[derive(Debug, Deserialize, Default)]
struct Branches {
    only: Option<OneOrMany>,
    except: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => s
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            OneOrMany::Many(v) => v,
        }
    }
}

/// What an integration entry supplies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    pub name: String,
    /// The entry's region, `us-east-1` when it has none.
    pub region: String,
    pub only: Vec<String>,
    pub except: Vec<String>,
}

/// Read `path` and find the entry named `name`. Errors say what is wrong and, for a missing entry, list
/// the names that exist.
pub fn find(path: &Path, name: &str) -> Result<Integration, String> {
    let text = crate::files::read_bounded(path, MAX_BYTES)?;
    parse(&text, name).map_err(|e| format!("{}: {e}", path.display()))
}

/// An integrations file is a few entries: anything larger, or expanding aliases by the thousand, is
/// hostile or a mistake.
const MAX_BYTES: usize = 1 << 20;
const MAX_REPLAYED_EVENTS: usize = 10_000;

/// Parse the text of an integrations file and find the entry named `name`.
pub fn parse(text: &str, name: &str) -> Result<Integration, String> {
    if text.len() > MAX_BYTES {
        return Err(format!(
            "the file is {} bytes; an integrations file is at most {MAX_BYTES}",
            text.len()
        ));
    }
    let mut options = serde_saphyr::Options::default();
    options.alias_limits = serde_saphyr::alias_limits! { max_total_replayed_events: MAX_REPLAYED_EVENTS };
    let file: File = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| format!("not a valid integrations file: {}", first_line(&e.to_string())))?;
    let entries = file.integrations.map(|s| s.hub).unwrap_or_default();
    let Some(entry) = entries.iter().position(|e| e.integration_name == name) else {
        let names: Vec<&str> = entries.iter().map(|e| e.integration_name.as_str()).collect();
        return Err(if names.is_empty() {
            format!("the integration name {name} does not match any entry: the file has no integrations: hub: entries")
        } else {
            format!(
                "the integration name {name} does not match any entry; the file has: {}",
                names.join(", ")
            )
        });
    };
    let same = entries.iter().filter(|e| e.integration_name == name).count();
    if same > 1 {
        return Err(format!(
            "{same} entries are named {name}: the integration to use is ambiguous; give each entry its own \
             integrationName"
        ));
    }
    let entry = entries.into_iter().nth(entry).expect("found above");
    match entry.kind.as_deref() {
        Some(k) if k.eq_ignore_ascii_case("ecr") => {}
        other => {
            return Err(format!(
                "the integration {name} is of type {}, not ecr: name an ECR integration",
                other.unwrap_or("(none)")
            ));
        }
    }
    let branches = entry.branches.unwrap_or_default();
    Ok(Integration {
        name: entry.integration_name,
        region: entry.region.unwrap_or_else(|| "us-east-1".to_string()),
        only: branches.only.map(OneOrMany::into_vec).unwrap_or_default(),
        except: branches.except.map(OneOrMany::into_vec).unwrap_or_default(),
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
integrations:
  hub:
    - integrationName: ecr-prod
      type: ecr
      region: eu-west-1
      branches:
        only:
          - main
          - release/*
        except: release/old
    - integrationName: ecr-default
      type: ecr
    - integrationName: dockerhub
      type: docker
"#;

    #[test]
    fn an_entry_supplies_region_and_branches() {
        let i = parse(FILE, "ecr-prod").unwrap();
        assert_eq!(i.region, "eu-west-1");
        assert_eq!(i.only, vec!["main", "release/*"]);
        assert_eq!(i.except, vec!["release/old"]);
        let i = parse(FILE, "ecr-default").unwrap();
        assert_eq!(i.region, "us-east-1");
        assert!(i.only.is_empty() && i.except.is_empty());
    }

    #[test]
    fn a_missing_entry_lists_the_names_that_exist() {
        let e = parse(FILE, "ecr-staging").unwrap_err();
        assert!(
            e.contains("ecr-staging does not match") && e.contains("ecr-prod, ecr-default, dockerhub"),
            "{e}"
        );
    }

    #[test]
    fn an_entry_of_another_type_is_refused() {
        let e = parse(FILE, "dockerhub").unwrap_err();
        assert!(e.contains("of type docker, not ecr"), "{e}");
    }

    #[test]
    fn two_entries_with_one_name_are_ambiguous() {
        let twice = format!("{FILE}    - integrationName: ecr-prod\n      type: ecr\n      region: us-west-2\n");
        let e = parse(&twice, "ecr-prod").unwrap_err();
        assert!(
            e.contains("2 entries are named ecr-prod") && e.contains("ambiguous"),
            "{e}"
        );
        assert!(parse(&twice, "ecr-default").is_ok());
    }

    #[test]
    fn hostile_files_are_errors() {
        for bad in [
            "",
            "integrations: 5",
            "[",
            "integrations:\n  hub:\n    - {}\n",
            "a: &a [*a]",
            &"[".repeat(10_000),
        ] {
            assert!(parse(bad, "x").is_err(), "{bad:.40}");
        }
    }
}
