//! The formula against Heroku's dynos, whose value wins, and the launch-time rules.

use super::*;

use crate::dynos::DYNOS;

fn formula() -> Formula {
    Formula::new(512, 8, 256, None)
}

#[test]
fn the_seven_heroku_dynos() {
    for dyno in DYNOS {
        let f = Formula::new(dyno.memory_mb, dyno.cpus, 256, None);
        assert_eq!(f.value, dyno.web_concurrency, "{}", dyno.name);
    }
}

#[test]
fn at_least_one_worker_and_at_most_the_cap() {
    assert_eq!(Formula::new(100, 8, 256, None).value, 1);
    assert!(Formula::new(100, 8, 256, None)
        .explain()
        .ends_with("at least 1"));
    assert_eq!(
        Formula::new(1 << 20, 1024, 1, None).value,
        MAX_WEB_CONCURRENCY
    );
    let capped = Formula::new(14336, 8, 256, Some(6));
    assert_eq!(capped.value, 6);
    assert!(
        capped
            .explain()
            .ends_with("capped by LAUNCHER_MAX_WORKERS=6"),
        "{}",
        capped.explain()
    );
    assert_eq!(
        Formula::new(512, 8, 256, Some(6)).value,
        2,
        "a cap above the default changes nothing"
    );
}

#[test]
fn explain_names_the_deciding_term() {
    assert_eq!(
        formula().explain(),
        "memory 512 MB / 256 MB per worker = 2, CPUs 2*8+1 = 17: memory decides"
    );
    assert!(Formula::new(2560, 2, 256, None)
        .explain()
        .ends_with("CPUs decide"));
}

#[test]
fn unset_means_ours() {
    let d = decide(Incoming::default(), &formula(), false);
    assert_eq!(d.outcome, Outcome::Ours(2));
    assert_eq!(d.outcome.set_by(), Some("launcher"));
}

#[test]
fn our_own_earlier_value_is_recomputed() {
    let incoming = Incoming {
        web_concurrency: Some("4"),
        set_by: Some("launcher"),
        launcher_value: Some("4"),
        ..Incoming::default()
    };
    assert_eq!(
        decide(incoming, &formula(), false).outcome,
        Outcome::Ours(2)
    );
}

#[test]
fn another_buildpacks_value_is_recomputed() {
    let incoming = Incoming {
        web_concurrency: Some("99"),
        set_by: Some("heroku/python"),
        launcher_value: None,
        ..Incoming::default()
    };
    let d = decide(incoming, &formula(), false);
    assert_eq!(d.outcome, Outcome::Ours(2));
    assert!(d
        .reason
        .starts_with("replaced WEB_CONCURRENCY=\"99\" set by \"heroku/python\""));
    assert!(d.warnings.is_empty());
}

#[test]
fn a_config_var_wins() {
    let incoming = Incoming {
        web_concurrency: Some("3"),
        ..Incoming::default()
    };
    let d = decide(incoming, &formula(), false);
    assert_eq!(d.outcome, Outcome::Users(3));
    assert_eq!(d.outcome.set_by(), None);
}

#[test]
fn a_value_set_inline_after_the_profile_wins() {
    let incoming = Incoming {
        web_concurrency: Some("3"),
        set_by: Some("launcher"),
        launcher_value: Some("2"),
        ..Incoming::default()
    };
    assert_eq!(
        decide(incoming, &formula(), false).outcome,
        Outcome::Users(3)
    );
}

#[test]
fn at_launch_the_platforms_value_is_the_users_and_any_other_a_buildpacks() {
    let at = |value, given, set_by| {
        let incoming = Incoming {
            web_concurrency: Some(value),
            set_by,
            launcher_value: None,
            platform_value: Some(given),
        };
        decide(incoming, &formula(), false)
    };
    // Heroku's Node.js CNB's exec.d value, unmarked, with no config var: replaced.
    let d = at("63", None, None);
    assert_eq!(d.outcome, Outcome::Ours(2));
    assert!(d
        .reason
        .starts_with("replaced WEB_CONCURRENCY=\"63\" set at launch by a buildpack"));
    // A config var, written back as it was by a buildpack, or written over: the user's.
    let d = at("3", Some("3"), None);
    assert_eq!((d.outcome, d.restore), (Outcome::Users(3), false));
    for (value, set_by) in [("63", None), ("99", Some("heroku/x")), ("3", Some("x"))] {
        let d = at(value, Some("3"), set_by);
        assert_eq!((d.outcome, d.restore), (Outcome::Users(3), true), "{value}");
    }
    // A config var that is no worker count: replaced with a warning, as anywhere.
    let d = at("63", Some("abc"), None);
    assert_eq!((d.outcome, d.warnings.len()), (Outcome::Ours(2), 1));
}

#[test]
fn invalid_user_values_are_replaced_with_one_warning() {
    for bad in ["", "abc", "0", "-2", "1e3", "04", "1025", &"9".repeat(30)] {
        let incoming = Incoming {
            web_concurrency: Some(bad),
            ..Incoming::default()
        };
        let d = decide(incoming, &formula(), false);
        assert_eq!(d.outcome, Outcome::Ours(2), "{bad:?}");
        assert_eq!(d.warnings.len(), 1, "{bad:?}");
        assert!(d.warnings[0].ends_with("is not a whole number from 1 to 1024; using 2"));
    }
}

#[test]
fn disabled_leaves_everything_as_it_is() {
    let incoming = Incoming {
        web_concurrency: Some("99"),
        set_by: Some("heroku/python"),
        launcher_value: None,
        ..Incoming::default()
    };
    let d = decide(incoming, &formula(), true);
    assert_eq!(
        d.outcome,
        Outcome::Disabled {
            current: Some(99),
            set_by: Some("heroku/python".to_owned())
        }
    );
    assert_eq!(
        decide(Incoming::default(), &formula(), true)
            .outcome
            .web_concurrency(),
        None
    );
}
