//! Branch filters: whether this run should push at all, from `PLUGIN_BRANCHES_ONLY` / `PLUGIN_BRANCHES_EXCEPT`
//! (or an integration's `branches:`) and the branch the CI is building.
//!
//! Patterns are globs where `*` does not cross `/` and `**` does, as in Drone, Woodpecker and GitHub
//! Actions; `except` wins over `only`. The branch is `PLUGIN_BRANCH`, else read from the CI's own variables.
//! A filter with no way to know the branch is an error, never a silent push or skip.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::HashMap;

use super::ci::BRANCH_VARIABLES;

/// A list of branch patterns, as written and compiled.
#[derive(Debug, Clone)]
pub struct Patterns {
    pub written: Vec<String>,
    set: GlobSet,
}

impl Patterns {
    /// Compile comma-separated globs; returns what is allowed on error.
    pub fn parse(items: &[String]) -> Result<Patterns, String> {
        let mut builder = GlobSetBuilder::new();
        for item in items {
            let glob = GlobBuilder::new(item)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| {
                    format!(
                        "glob patterns such as main, release/*, feature/** (`{item}`: {})",
                        e.kind()
                    )
                })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| format!("glob patterns ({e})"))?;
        Ok(Patterns {
            written: items.to_vec(),
            set,
        })
    }

    fn matches(&self, branch: &str) -> Option<&str> {
        self.set.matches(branch).first().map(|i| self.written[*i].as_str())
    }
}

/// The branch filter of a run.
#[derive(Debug, Clone, Default)]
pub struct BranchFilter {
    pub only: Option<Patterns>,
    pub except: Option<Patterns>,
    /// Where the filter came from, for messages (`PLUGIN_BRANCHES_ONLY`, `integration ecr-prod`).
    pub origin: String,
}

/// The branch and the variable it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub name: String,
    pub from: String,
}

/// Whether to run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No filter, or the branch passes it.
    Run(String),
    /// The filter excludes the branch: push nothing, exit 0.
    Skip(String),
}

impl BranchFilter {
    pub fn is_empty(&self) -> bool {
        self.only.is_none() && self.except.is_none()
    }

    /// Decide for `branch`. Errors when there is a filter and no branch.
    pub fn verdict(&self, branch: Option<&Branch>) -> Result<Verdict, String> {
        if self.is_empty() {
            return Ok(Verdict::Run("no branch filter".into()));
        }
        let Some(branch) = branch else {
            return Err(format!(
                "a branch filter is set ({}) but the branch is unknown: set PLUGIN_BRANCH, or run in a CI that sets \
                 one of {}",
                self.origin,
                BRANCH_VARIABLES.join(", ")
            ));
        };
        let name = &branch.name;
        // The branch and patterns come from the CI's variables: escaped, so they cannot forge log lines.
        let shown = crate::domain::grammar::printable(name);
        if let Some(pattern) = self.except.as_ref().and_then(|p| p.matches(name)) {
            let pattern = crate::domain::grammar::printable(pattern);
            return Ok(Verdict::Skip(format!(
                "branch {shown} (from {}) matches except pattern `{pattern}`",
                branch.from
            )));
        }
        match &self.only {
            Some(only) => match only.matches(name) {
                Some(pattern) => Ok(Verdict::Run(format!(
                    "branch {shown} matches only pattern `{}`",
                    crate::domain::grammar::printable(pattern)
                ))),
                None => Ok(Verdict::Skip(format!(
                    "branch {shown} (from {}) matches none of the only patterns {}",
                    branch.from,
                    crate::domain::grammar::printable(&only.written.join(", "))
                ))),
            },
            None => Ok(Verdict::Run(format!("branch {shown} matches no except pattern"))),
        }
    }
}

/// The branch: `PLUGIN_BRANCH` when given, else the first CI variable that is set. Jenkins' `origin/`
/// and a full `refs/heads/` are stripped.
pub fn detect(explicit: Option<&str>, ambient: &HashMap<String, String>) -> Option<Branch> {
    let (from, value) = match explicit {
        Some(b) => ("PLUGIN_BRANCH".to_string(), b.to_string()),
        None => BRANCH_VARIABLES.iter().find_map(|k| {
            ambient
                .get(*k)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (k.to_string(), v.trim().to_string()))
        })?,
    };
    let name = value.strip_prefix("refs/heads/").unwrap_or(&value);
    let name = if from == "GIT_BRANCH" || from == "BRANCH_NAME" {
        name.strip_prefix("origin/").unwrap_or(name)
    } else {
        name
    };
    Some(Branch {
        name: name.to_string(),
        from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(items: &[&str]) -> Option<Patterns> {
        Some(Patterns::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap())
    }

    fn branch(name: &str) -> Branch {
        Branch {
            name: name.into(),
            from: "PLUGIN_BRANCH".into(),
        }
    }

    fn runs(filter: &BranchFilter, name: &str) -> bool {
        matches!(filter.verdict(Some(&branch(name))).unwrap(), Verdict::Run(_))
    }

    #[test]
    fn a_star_stays_within_one_segment_and_a_double_star_crosses() {
        let f = BranchFilter {
            only: patterns(&["main", "release/*", "feature/**"]),
            ..Default::default()
        };
        assert!(runs(&f, "main"));
        assert!(runs(&f, "release/1.2"));
        assert!(!runs(&f, "release/1.2/hotfix"));
        assert!(runs(&f, "feature/a/b/c"));
        assert!(!runs(&f, "mainline"));
        assert!(!runs(&f, "dev"));
    }

    #[test]
    fn except_wins_over_only() {
        let f = BranchFilter {
            only: patterns(&["release/**"]),
            except: patterns(&["release/old/*"]),
            origin: String::new(),
        };
        assert!(runs(&f, "release/2.0"));
        assert!(!runs(&f, "release/old/1"));
        let f = BranchFilter {
            except: patterns(&["wip-*"]),
            ..Default::default()
        };
        assert!(runs(&f, "main"));
        assert!(!runs(&f, "wip-x"));
    }

    #[test]
    fn a_filter_without_a_branch_is_an_error_and_no_filter_always_runs() {
        let f = BranchFilter {
            only: patterns(&["main"]),
            origin: "PLUGIN_BRANCHES_ONLY".into(),
            ..Default::default()
        };
        let e = f.verdict(None).unwrap_err();
        assert!(e.contains("PLUGIN_BRANCHES_ONLY") && e.contains("PLUGIN_BRANCH"), "{e}");
        assert!(matches!(BranchFilter::default().verdict(None), Ok(Verdict::Run(_))));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        assert!(Patterns::parse(&["release/[".to_string()]).is_err());
        assert!(Patterns::parse(&["{a,b".to_string()]).is_err());
    }

    #[test]
    fn the_branch_comes_from_the_ci_variables() {
        let env = |k: &str, v: &str| -> HashMap<String, String> { [(k.to_string(), v.to_string())].into() };
        for var in BRANCH_VARIABLES {
            let b = detect(None, &env(var, "main")).unwrap();
            assert_eq!((b.name.as_str(), b.from.as_str()), ("main", *var));
        }
        assert_eq!(
            detect(None, &env("GIT_BRANCH", "origin/release/1")).unwrap().name,
            "release/1"
        );
        assert_eq!(
            detect(None, &env("GITHUB_REF_NAME", "refs/heads/dev")).unwrap().name,
            "dev"
        );
        assert_eq!(detect(Some("x"), &env("CF_BRANCH", "main")).unwrap().name, "x");
        let both: HashMap<String, String> = [
            ("CF_BRANCH".to_string(), "cf".to_string()),
            ("DRONE_BRANCH".to_string(), "drone".to_string()),
        ]
        .into();
        assert_eq!(detect(None, &both).unwrap().name, "cf");
        assert_eq!(detect(None, &HashMap::new()), None);
    }
}
