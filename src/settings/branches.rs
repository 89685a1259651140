//! The branch filter: explicit settings, else an integration's branches (`PLUGIN_INTEGRATIONS_FILE`), and
//! its verdict for this build's branch (as each CI names it).

use super::{Key, Parser, integrations};
use crate::domain::branch::{self, BranchFilter, Patterns, Verdict};
use crate::domain::grammar;
use std::path::Path;

impl Parser {
    /// The integration entry named by `PLUGIN_INTEGRATION` in `PLUGIN_INTEGRATIONS_FILE`.
    pub(super) fn integration(&mut self) -> Option<integrations::Integration> {
        // Each needs the other (the table); with only one, the rules already said so.
        let file = self.values.remove(&Key::IntegrationsFile);
        let name = self.values.remove(&Key::Integration);
        let (file, name) = (file?, name?);
        match integrations::find(Path::new(&file), &name) {
            Ok(i) => match grammar::region(&i.region) {
                Ok(()) => Some(i),
                Err(allowed) => self.problem(format!(
                    "PLUGIN_INTEGRATIONS_FILE: the region of {name} is not allowed: expected {allowed}"
                )),
            },
            Err(e) => self.problem(format!("PLUGIN_INTEGRATIONS_FILE: {e}")),
        }
    }

    /// The branch filter (explicit settings win over the integration's) and its verdict for this build.
    pub(super) fn branch(&mut self, integration: Option<&integrations::Integration>) -> Option<Verdict> {
        let explicit = self.values.remove(&Key::Branch);
        let mut compile = |key: Key, from_integration: Option<&Vec<String>>| -> Option<(Patterns, String)> {
            if let Some(items) = self.list(key, |_| Ok(())) {
                return match Patterns::parse(&items) {
                    Ok(p) => Some((p, key.env())),
                    Err(allowed) => self.problem(format!("{}: not allowed: expected {allowed}", key.env())),
                };
            }
            let items = from_integration.filter(|i| !i.is_empty())?;
            let origin = format!(
                "the branches of integration {}",
                integration.map_or("", |i| i.name.as_str())
            );
            match Patterns::parse(items) {
                Ok(p) => Some((p, origin)),
                Err(allowed) => self.problem(format!("PLUGIN_INTEGRATIONS_FILE: {origin}: expected {allowed}")),
            }
        };
        let only = compile(Key::BranchesOnly, integration.map(|i| &i.only));
        let except = compile(Key::BranchesExcept, integration.map(|i| &i.except));
        let origin = [only.as_ref(), except.as_ref()]
            .into_iter()
            .flatten()
            .map(|(_, o)| o.clone())
            .collect::<Vec<_>>()
            .join(", ");
        let filter = BranchFilter {
            only: only.map(|(p, _)| p),
            except: except.map(|(p, _)| p),
            origin,
        };
        let detected = branch::detect(explicit.as_deref(), &self.ambient);
        match filter.verdict(detected.as_ref()) {
            Ok(v) => Some(v),
            Err(e) => self.problem(e),
        }
    }
}
