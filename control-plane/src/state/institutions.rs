//! Regions and institutions: who may schedule, and where their meetings
//! may be processed.

use super::*;

/// Regions (nested: `nordic` is inside `eu`) and institutions by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Institutions {
    pub regions: BTreeMap<String, Region>,
    pub(super) by_name: BTreeMap<String, Institution>,
}

impl Default for Institutions {
    fn default() -> Self {
        let mut regions = BTreeMap::new();
        for (name, parent) in [("eu", None), ("nordic", Some("eu"))] {
            regions.insert(
                name.to_string(),
                Region {
                    name: name.to_string(),
                    parent: parent.map(str::to_string),
                },
            );
        }
        Institutions {
            regions,
            by_name: BTreeMap::new(),
        }
    }
}

impl Institutions {
    pub fn get(&self, name: &str) -> Option<&Institution> {
        self.by_name.get(name)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> + '_ {
        self.by_name.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &Institution> + '_ {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl ClusterState {
    /// The residency region and every region nested inside it.
    pub fn allowed_regions(&self, residency: &str) -> BTreeSet<String> {
        let mut allowed = BTreeSet::new();
        allowed.insert(residency.to_string());
        // Regions form a shallow tree; grow the set until it stops changing.
        loop {
            let before = allowed.len();
            for r in self.institutions.regions.values() {
                if r.parent.as_ref().is_some_and(|p| allowed.contains(p)) {
                    allowed.insert(r.name.clone());
                }
            }
            if allowed.len() == before {
                return allowed;
            }
        }
    }

    pub(super) fn create_institution(
        &mut self,
        CreateInstitution {
            name,
            residency,
            home_region,
            max_participants,
        }: &CreateInstitution,
        now_ms: u64,
    ) -> Response {
        let max_participants = *max_participants;
        if self.institutions.by_name.contains_key(name) {
            return Err(StateError::InstitutionExists {
                name: name.to_string(),
            });
        }
        if !self.institutions.regions.contains_key(residency) {
            return Err(StateError::UnknownRegion {
                name: residency.to_string(),
            });
        }
        let home = home_region.as_deref().unwrap_or(residency);
        if !self.allowed_regions(residency).contains(home) {
            return Err(StateError::HomeOutsideResidency {
                home: home.to_string(),
                residency: residency.to_string(),
            });
        }
        let inst = Institution {
            name: name.to_string(),
            residency: residency.to_string(),
            home_region: home.to_string(),
            max_participants,
            created_at_ms: now_ms,
        };
        self.institutions
            .by_name
            .insert(name.to_string(), inst.clone());
        self.metadata.mark(MetaKey::Institution {
            name: name.to_string(),
        });
        Ok(Output::Institution(inst))
    }
}
