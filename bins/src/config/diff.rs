//! What changed between two configurations, by name: what a SIGHUP reload must touch and
//! what it must leave alone (an unchanged VRRP instance keeps its state, an unchanged
//! virtual server its connections and scheduler state).
//!
//! # Examples
//!
//! ```
//! use std::path::Path;
//! use lb_bins::config::{diff::diff, toml::parse_str};
//!
//! let old = "[[virtual_server]]\nlisten = \"198.18.0.250:80\"\n[[virtual_server.backend]]\naddress = \"198.18.0.151:82\"\nweight = 3\n";
//! let new = old.replace("weight = 3", "weight = 5");
//! let (a, _) = parse_str(old, Path::new("a.toml")).unwrap();
//! let (b, _) = parse_str(&new, Path::new("b.toml")).unwrap();
//! let d = diff(&a, &b);
//! assert_eq!(d.virtual_servers.changed, ["198.18.0.250:80"]);
//! assert!(d.vrrp_instances.is_empty());
//! assert_eq!(d.to_string(), "virtual_server changed 198.18.0.250:80");
//! ```

use super::model::Config;

/// Names added, removed, changed and unchanged in one kind of section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Only in the new configuration.
    pub added: Vec<String>,
    /// Only in the old configuration.
    pub removed: Vec<String>,
    /// In both, with different settings.
    pub changed: Vec<String>,
    /// In both, identical.
    pub unchanged: Vec<String>,
}

impl Changes {
    /// Whether nothing was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    fn compute<'a, T: PartialEq + 'a>(
        old: impl IntoIterator<Item = (&'a str, &'a T)>,
        new: impl IntoIterator<Item = (&'a str, &'a T)>,
    ) -> Self {
        let old: Vec<_> = old.into_iter().collect();
        let new: Vec<_> = new.into_iter().collect();
        let mut c = Self::default();
        for (name, n) in &new {
            match old.iter().find(|(o, _)| o == name) {
                None => c.added.push((*name).to_owned()),
                Some((_, o)) if o == n => c.unchanged.push((*name).to_owned()),
                Some(_) => c.changed.push((*name).to_owned()),
            }
        }
        for (name, _) in &old {
            if !new.iter().any(|(n, _)| n == name) {
                c.removed.push((*name).to_owned());
            }
        }
        c
    }
}

/// The differences between two validated configurations.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigDiff {
    /// Whether `global` changed (log level, admin socket, drain deadline, router_id).
    pub global_changed: bool,
    /// `vrrp_script`s by name.
    pub vrrp_scripts: Changes,
    /// `vrrp_track_process`es by name.
    pub vrrp_track_processes: Changes,
    /// `track_file`s by name.
    pub track_files: Changes,
    /// `bfd_instance`s by name.
    pub bfd_instances: Changes,
    /// `vrrp_instance`s by name.
    pub vrrp_instances: Changes,
    /// `vrrp_sync_group`s by name.
    pub sync_groups: Changes,
    /// `virtual_server`s by name.
    pub virtual_servers: Changes,
}

impl ConfigDiff {
    /// Whether the two configurations are the same.
    pub fn is_empty(&self) -> bool {
        !self.global_changed
            && self.vrrp_scripts.is_empty()
            && self.vrrp_track_processes.is_empty()
            && self.track_files.is_empty()
            && self.bfd_instances.is_empty()
            && self.vrrp_instances.is_empty()
            && self.sync_groups.is_empty()
            && self.virtual_servers.is_empty()
    }
}

/// One line for the log: each kind of section that changed, with its names, e.g.
/// `vrrp_instance changed VI_1; virtual_server added api, removed web`.
impl std::fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.global_changed {
            parts.push("global changed".into());
        }
        for (kind, c) in [
            ("vrrp_script", &self.vrrp_scripts),
            ("vrrp_track_process", &self.vrrp_track_processes),
            ("track_file", &self.track_files),
            ("bfd_instance", &self.bfd_instances),
            ("vrrp_instance", &self.vrrp_instances),
            ("vrrp_sync_group", &self.sync_groups),
            ("virtual_server", &self.virtual_servers),
        ] {
            let what: Vec<String> = [
                ("added", &c.added),
                ("changed", &c.changed),
                ("removed", &c.removed),
            ]
            .into_iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(how, names)| format!("{how} {}", names.join(" ")))
            .collect();
            if !what.is_empty() {
                parts.push(format!("{kind} {}", what.join(", ")));
            }
        }
        if parts.is_empty() {
            f.write_str("nothing changed")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Compares `old` and `new` section by section, by name.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    ConfigDiff {
        global_changed: old.global != new.global,
        vrrp_scripts: Changes::compute(
            old.vrrp_scripts.iter().map(|s| (s.name.as_str(), s)),
            new.vrrp_scripts.iter().map(|s| (s.name.as_str(), s)),
        ),
        vrrp_track_processes: Changes::compute(
            old.vrrp_track_processes
                .iter()
                .map(|s| (s.name.as_str(), s)),
            new.vrrp_track_processes
                .iter()
                .map(|s| (s.name.as_str(), s)),
        ),
        track_files: Changes::compute(
            old.track_files.iter().map(|s| (s.name.as_str(), s)),
            new.track_files.iter().map(|s| (s.name.as_str(), s)),
        ),
        bfd_instances: Changes::compute(
            old.bfd_instances.iter().map(|s| (s.name.as_str(), s)),
            new.bfd_instances.iter().map(|s| (s.name.as_str(), s)),
        ),
        vrrp_instances: Changes::compute(
            old.vrrp_instances.iter().map(|s| (s.name.as_str(), s)),
            new.vrrp_instances.iter().map(|s| (s.name.as_str(), s)),
        ),
        sync_groups: Changes::compute(
            old.sync_groups.iter().map(|s| (s.name.as_str(), s)),
            new.sync_groups.iter().map(|s| (s.name.as_str(), s)),
        ),
        virtual_servers: Changes::compute(
            old.virtual_servers.iter().map(|s| (s.name.as_str(), s)),
            new.virtual_servers.iter().map(|s| (s.name.as_str(), s)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{VirtualServer, VrrpInstance};

    #[test]
    fn sections_are_matched_by_name() {
        let mut a = Config::default();
        a.vrrp_instances.push(VrrpInstance::new("VI_1", "eth0", 51));
        a.vrrp_instances.push(VrrpInstance::new("VI_2", "eth0", 52));
        a.virtual_servers
            .push(VirtualServer::new("198.18.0.250:80".parse().unwrap()));
        let mut b = a.clone();
        b.vrrp_instances.swap(0, 1);
        b.vrrp_instances[0].priority = 90; // VI_2
        b.vrrp_instances.push(VrrpInstance::new("VI_3", "eth0", 53));
        b.virtual_servers.clear();
        let d = diff(&a, &b);
        assert_eq!(d.vrrp_instances.changed, ["VI_2"]);
        assert_eq!(d.vrrp_instances.unchanged, ["VI_1"]);
        assert_eq!(d.vrrp_instances.added, ["VI_3"]);
        assert_eq!(d.virtual_servers.removed, ["198.18.0.250:80"]);
        assert!(!d.global_changed);
        assert!(diff(&a, &a).is_empty());
    }
}
