//! Failure injection: a plan of timed actions (TOML). The store outage
//! itself is `testkit::OutageStore`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::churn;

/// A chaos plan: `[[event]]` entries, each at a time from the start of the
/// traffic. Format in docs/lab.md; an example in `loadtest/chaos/`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    #[serde(default, rename = "event")]
    pub events: Vec<Event>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Seconds after the traffic started.
    pub at_s: f64,
    pub action: Action,
}

// By hand: `#[serde(flatten)]` cannot refuse unknown fields, and a
// misspelt field must not silently become a default.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let at_s = match table.remove("at_s") {
            Some(toml::Value::Float(f)) => f,
            Some(toml::Value::Integer(i)) => i as f64,
            Some(_) => return Err(D::Error::custom("at_s must be a number of seconds")),
            None => return Err(D::Error::missing_field("at_s")),
        };
        let action = Action::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(Event { at_s, action })
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Kill an edge abruptly: its host drops off the network first, so not
    /// even a close frame gets out (as under SIGKILL or a power cut).
    KillEdge { edge: u32 },
    /// Start a killed or drained edge again, same id and address.
    RestartEdge { edge: u32 },
    /// Stop an edge gracefully: goaway to its clients (they move), then
    /// close.
    DrainEdge { edge: u32 },
    /// Drain and restart every running edge in turn, one every `every_s`
    /// seconds (each back half a period after its drain).
    RollingRestart { every_s: f64 },
    /// Change the links between two cities (both ways): extra delay, jitter,
    /// loss.
    DegradeLink {
        a: String,
        b: String,
        #[serde(default)]
        extra_delay_ms: f64,
        jitter_ms: Option<f64>,
        loss: Option<f64>,
    },
    /// Cut the links between two cities.
    Partition { a: String, b: String },
    /// Undo `degrade_link` / `partition` (and the topology file's override)
    /// between two cities.
    HealLink { a: String, b: String },
    /// Cut every link between a region's cities and the rest of the world.
    PartitionRegion { region: String },
    /// Undo `partition_region` (and any link change between the region and
    /// the rest).
    HealRegion { region: String },
    /// Move every client of a city to another last mile (`profile`: a name
    /// of `world::LAST_MILES`, or `"none"` for the topology's `access_ms`):
    /// the home Wi-Fi getting busy, a city's users on the train.
    SetLastMile { city: String, profile: String },
    /// Crash the leading controller of a region (no resignation).
    KillController { region: String },
    /// Crash every controller (no resignation), APIs included.
    StopControllers,
    /// Start every stopped controller again (same API addresses).
    StartControllers,
    /// Make the control store unreachable for everyone.
    StopStore,
    /// Make it reachable again.
    StartStore,
}

impl Action {
    /// Whether users may feel it (media gaps are then failovers).
    pub fn disrupts_media(&self) -> bool {
        matches!(
            self,
            Action::KillEdge { .. }
                | Action::Partition { .. }
                | Action::PartitionRegion { .. }
                | Action::DrainEdge { .. }
        )
    }

    /// How long routes may move after it ([`churn::Settling`]): longer
    /// where a link's loss may change (a degrade with loss, or a heal that
    /// may undo one), since loss is measured over a window of probes.
    pub fn route_settle(&self) -> Duration {
        match self {
            Action::DegradeLink { loss: Some(l), .. } if *l > 0.0 => churn::LOSS_SETTLE,
            Action::HealLink { .. } | Action::HealRegion { .. } => churn::LOSS_SETTLE,
            _ => churn::ROUTE_SETTLE,
        }
    }
}

/// Latest time an event may have, seconds (a week): later ones would never
/// run, and times this large no longer fit a timer.
pub const MAX_AT_S: f64 = 7.0 * 86_400.0;

impl Plan {
    pub fn load(path: &Path) -> anyhow::Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the chaos plan {}", path.display()))?;
        Plan::from_toml(&text).with_context(|| format!("in the chaos plan {}", path.display()))
    }

    /// Parse and check a plan's text; the events come out sorted by time
    /// (events at the same time keep their order in the file).
    pub fn from_toml(text: &str) -> anyhow::Result<Plan> {
        let mut plan: Plan = toml::from_str(text).context("parsing")?;
        for e in &plan.events {
            e.validate()?;
        }
        plan.events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        Ok(plan)
    }
}

impl Event {
    /// What can be checked without the lab: times, numbers, and that the
    /// cities and regions exist (whether this topology has them, and which
    /// edges run, is only known when the event happens).
    pub fn validate(&self) -> anyhow::Result<()> {
        let at = self.at_s;
        anyhow::ensure!(
            at.is_finite() && (0.0..=MAX_AT_S).contains(&at),
            "chaos event at {at} s: time must be within 0-{MAX_AT_S} s"
        );
        let city = |c: &str| {
            topology::geo::find_city(c)
                .map(|_| ())
                .with_context(|| format!("chaos event at {at} s: unknown city {c:?}"))
        };
        let region = |r: &str| {
            anyhow::ensure!(
                topology::geo::regions().contains(&r),
                "chaos event at {at} s: unknown region {r:?} (one of {})",
                topology::geo::regions().join(", ")
            );
            Ok(())
        };
        match &self.action {
            Action::KillEdge { edge }
            | Action::RestartEdge { edge }
            | Action::DrainEdge { edge } => {
                anyhow::ensure!(*edge > 0, "chaos event at {at} s: edge ids start at 1");
            }
            Action::RollingRestart { every_s } => {
                // The restarts are spread over edges × every_s after `at_s`.
                anyhow::ensure!(
                    every_s.is_finite() && *every_s > 0.0 && *every_s <= 3_600.0,
                    "chaos event at {at} s: rolling_restart every_s {every_s} must be within 0-3600 s (not 0)"
                );
            }
            Action::DegradeLink {
                a,
                b,
                extra_delay_ms,
                jitter_ms,
                loss,
            } => {
                city(a)?;
                city(b)?;
                super::world::validate_override(&super::world::LinkOverride {
                    a: a.clone(),
                    b: b.clone(),
                    extra_delay_ms: *extra_delay_ms,
                    jitter_ms: *jitter_ms,
                    loss: *loss,
                    down: false,
                })
                .with_context(|| format!("chaos event at {at} s"))?;
            }
            Action::Partition { a, b } | Action::HealLink { a, b } => {
                city(a)?;
                city(b)?;
            }
            Action::SetLastMile { city: c, profile } => {
                city(c)?;
                super::world::last_mile(profile)
                    .with_context(|| format!("chaos event at {at} s"))?;
            }
            Action::PartitionRegion { region: r }
            | Action::HealRegion { region: r }
            | Action::KillController { region: r } => region(r)?,
            Action::StopControllers
            | Action::StartControllers
            | Action::StopStore
            | Action::StartStore => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_sorted_and_refuse_unknown_actions() {
        let plan: Plan = toml::from_str(
            r#"
[[event]]
at_s = 20
action = "restart_edge"
edge = 3
[[event]]
at_s = 10
action = "kill_edge"
edge = 3
[[event]]
at_s = 12
action = "degrade_link"
a = "fra"
b = "sin"
extra_delay_ms = 50
loss = 0.02
"#,
        )
        .unwrap();
        assert_eq!(plan.events.len(), 3);
        assert_eq!(plan.events[1].action, Action::KillEdge { edge: 3 });
        assert!(toml::from_str::<Plan>("[[event]]\nat_s = 1\naction = \"nuke\"").is_err());
        let typo = toml::from_str::<Plan>("[[event]]\nat_s = 1\naction = \"kill_edge\"\nedgee = 2");
        assert!(typo.unwrap_err().to_string().contains("edgee"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.toml");
        std::fs::write(&p, "[[event]]\nat_s = 5\naction = \"stop_store\"\n[[event]]\nat_s = 1\naction = \"start_store\"").unwrap();
        let loaded = Plan::load(&p).unwrap();
        assert_eq!(
            loaded.events[0].action,
            Action::StartStore,
            "sorted by time"
        );
    }

    #[test]
    fn plans_are_checked_when_loaded() {
        let err = |text: &str| format!("{:#}", Plan::from_toml(text).unwrap_err());
        let ev = |rest: &str| format!("[[event]]\nat_s = 1\n{rest}");
        // A time too large for a timer (or a NaN one from a rolling restart)
        // panicked in the lab's run loop (`Duration::from_secs_f64`).
        assert!(
            err("[[event]]\nat_s = 1e300\naction = \"stop_store\"").contains("time must be within")
        );
        assert!(
            err("[[event]]\nat_s = -1\naction = \"stop_store\"").contains("time must be within")
        );
        for every in ["nan", "-2", "0", "inf", "1e300"] {
            let e = err(&ev(&format!(
                "action = \"rolling_restart\"\nevery_s = {every}"
            )));
            assert!(e.contains("every_s"), "{every}: {e}");
        }
        assert!(err(&ev("action = \"kill_edge\"\nedge = 0")).contains("edge ids start at 1"));
        assert!(
            err(&ev("action = \"partition\"\na = \"fra\"\nb = \"atlantis\""))
                .contains("unknown city \"atlantis\"")
        );
        assert!(err(&ev("action = \"heal_region\"\nregion = \"mars\""))
            .contains("unknown region \"mars\""));
        let e = err(&ev(
            "action = \"degrade_link\"\na = \"fra\"\nb = \"sin\"\nloss = 2",
        ));
        assert!(e.contains("loss is not within 0-1"), "{e}");
        let e = err(&ev(
            "action = \"degrade_link\"\na = \"fra\"\nb = \"sin\"\nextra_delay_ms = nan",
        ));
        assert!(e.contains("extra_delay_ms"), "{e}");
        let ok = Plan::from_toml(&ev("action = \"rolling_restart\"\nevery_s = 2.5")).unwrap();
        assert_eq!(ok.events[0].action, Action::RollingRestart { every_s: 2.5 });
    }

    #[test]
    fn the_repository_plans_load_and_the_last_mile_plan_fits_the_weak_world() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(dir.join("chaos")).unwrap() {
            let path = entry.unwrap().path();
            Plan::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
        }
        let plan = Plan::load(&dir.join("chaos/last-mile.toml")).unwrap();
        let file = super::super::world::TopologyFile::load(&dir.join("topologies/weak.toml"));
        let mut world = super::super::world::World::new(file.unwrap()).unwrap();
        let before = world.rules();
        for e in &plan.events {
            let Action::SetLastMile { city, profile } = &e.action else {
                panic!("{:?}", e.action)
            };
            world.set_last_mile(city, profile).unwrap();
            if e.at_s == 10.0 {
                assert_ne!(world.rules(), before);
            }
        }
        assert_eq!(world.rules(), before, "switched and back");
    }

    #[test]
    fn set_last_mile_names_a_city_and_a_profile() {
        let plan = |rest: &str| Plan::from_toml(&format!("[[event]]\nat_s = 3\n{rest}"));
        let ok = plan("action = \"set_last_mile\"\ncity = \"lhr\"\nprofile = \"wifi-congested\"")
            .unwrap();
        assert_eq!(
            ok.events[0].action,
            Action::SetLastMile {
                city: "lhr".into(),
                profile: "wifi-congested".into()
            }
        );
        assert!(!ok.events[0].action.disrupts_media());
        plan("action = \"set_last_mile\"\ncity = \"London\"\nprofile = \"none\"").unwrap();
        let err = |rest: &str| format!("{:#}", plan(rest).unwrap_err());
        let e = err("action = \"set_last_mile\"\ncity = \"lhr\"\nprofile = \"5g\"");
        assert!(
            e.contains("chaos event at 3 s")
                && e.contains(
                    "unknown last_mile \"5g\" (one of broadband, 4g, wifi-congested, none)"
                ),
            "{e}"
        );
        let e = err("action = \"set_last_mile\"\ncity = \"atlantis\"\nprofile = \"4g\"");
        assert!(e.contains("unknown city \"atlantis\""), "{e}");
        let e = err("action = \"set_last_mile\"\ncity = \"lhr\"");
        assert!(e.contains("profile"), "{e}");
        let e = err("action = \"set_last_mile\"\ncity = \"lhr\"\nprofile = \"4g\"\nloss = 0.1");
        assert!(e.contains("loss"), "{e}");
    }
}
