//! Where the run writes: the destination registries, each with the region its token comes from, and the
//! run's region (an ECR host names its own; others take `PLUGIN_REGION`, else the container's).

use super::Parser;
use crate::domain::grammar::{self, printable};
use crate::domain::registry::Registry;
use crate::domain::target::TargetRegistry;

impl Parser {
    /// The destinations and the run's region. An ECR host brings its own region, and a `PLUGIN_REGION`
    /// that contradicts it is an error; other hosts take `PLUGIN_REGION`, else the container's
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`. The run's region is `PLUGIN_REGION`, else the first ECR host's.
    pub(super) fn destinations(
        &mut self,
        registries: Vec<Registry>,
        region: Option<String>,
    ) -> Option<(String, Vec<TargetRegistry>)> {
        let mut seen = std::collections::HashSet::new();
        for registry in &registries {
            if !seen.insert(registry.host.to_ascii_lowercase()) {
                return self.problem(format!(
                    "PLUGIN_REGISTRY names {} twice (a scheme or letter case does not make another registry): \
                     list each registry once",
                    registry.host
                ));
            }
        }
        for registry in &registries {
            let Some(ecr) = &registry.ecr else { continue };
            if let Some(region) = region.as_ref().filter(|r| **r != ecr.region) {
                return self.problem(format!(
                    "PLUGIN_REGION={region} conflicts with the PLUGIN_REGISTRY host {}, which is in {}: remove \
                     PLUGIN_REGION or make them agree",
                    registry.host, ecr.region
                ));
            }
        }
        let needs_region = registries.is_empty() || registries.iter().any(|r| r.ecr.is_none());
        let first_ecr = registries.iter().find_map(|r| r.ecr.as_ref()).map(|e| e.region.clone());
        let run_region = match (region, first_ecr) {
            (Some(r), _) => r,
            (None, Some(r)) if !needs_region => r,
            (None, _) => self.ambient_region()?,
        };
        let destinations = if registries.is_empty() {
            vec![TargetRegistry {
                registry: None,
                region: run_region.clone(),
            }]
        } else {
            registries
                .into_iter()
                .map(|r| {
                    let region = r.ecr.as_ref().map_or_else(|| run_region.clone(), |e| e.region.clone());
                    TargetRegistry {
                        registry: Some(r),
                        region,
                    }
                })
                .collect()
        };
        Some((run_region, destinations))
    }

    pub(super) fn ambient_region(&mut self) -> Option<String> {
        let ambient = ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|k| {
            self.ambient
                .get(*k)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*k, v.trim().to_string()))
        });
        match ambient {
            Some((key, region)) => match grammar::region(&region) {
                Ok(()) => Some(region),
                Err(allowed) => self.problem(format!(
                    "{key}=`{}` is not allowed: expected {allowed}",
                    printable(&region)
                )),
            },
            None => self.problem(
                "no region: set PLUGIN_REGION, or PLUGIN_REGISTRY to an ECR host, or AWS_REGION in the container",
            ),
        }
    }
}
