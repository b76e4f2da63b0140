//! Config files whose every key is also a flag and an environment variable.
//!
//! A binary's config is TOML: sections (`[limits]`, `[store]`...), each one
//! struct deriving serde's traits and `clap::Args`. [`Flags`], flattened
//! into the binary's command line, makes every field of every section
//! ([`Flagged::sections`]) the flag `--<section>-<field>` with an
//! environment variable ([`Flagged::env`]), neither required nor defaulted;
//! [`Flags::apply`] then writes those given (flag, else variable) over the
//! config read from the file. A field added to a section has its flag and
//! variable with nothing else to write, and [`check`] (each binary's tests
//! run it) finds keys of the file that have none. Names a key had before
//! this scheme stay: old flags as `#[arg(visible_alias = "...")]` on the
//! field, old variables as exceptions in the binary's [`Flagged::env`].
//!
//! Secrets are never flags (a process listing shows flags): [`check`]
//! refuses a secret-named key ([`is_secret_key`]) in a section, and one
//! anywhere that serializes as anything but [`REDACTED`] (`check-config`
//! prints the config).
//!
//! The merge is clap's own `FromArgMatches::update_from_arg_matches`, which
//! assigns exactly the fields whose argument was given: the file's values
//! stay underneath. figment or config would merge through a second,
//! untyped map of every source, with their own precedence and error text,
//! for what clap's derive already does on the typed sections.

use std::collections::HashSet;
use std::marker::PhantomData;

use clap::{ArgAction, ArgMatches, Command, FromArgMatches};
use serde::Serialize;

/// What a secret (app secrets, tokens) serializes as: the effective config
/// `check-config` prints never shows one (see [`redact_each`]).
pub const REDACTED: &str = "<redacted>";

/// Serializes a list of secrets as one [`REDACTED`] per secret (how many
/// there are, mid-rotation, is worth seeing); for
/// `#[serde(serialize_with = "control::flags::redact_each")]`.
pub fn redact_each<S: serde::Serializer>(secrets: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(|_| REDACTED))
}

/// Whether a config key names a secret rather than, say, the environment
/// variable holding one (`secrets_env`) or a rate (`joins_per_token_per_s`):
/// its last word is secret, token or password. Such keys must serialize as
/// [`REDACTED`] and never be flags ([`check`]).
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('_').next().unwrap_or(key);
    matches!(
        last,
        "secret" | "secrets" | "token" | "tokens" | "password" | "passwords"
    )
}

/// A config whose sections are flags.
pub trait Flagged: Sized + 'static {
    /// The sections whose every field is a flag, in file order (build each
    /// with [`section!`](crate::section)).
    fn sections() -> Vec<Section<Self>>;

    /// Top-level keys of the file that are not flags: lists of tables
    /// (`[[apps]]`...) and sections of lab code.
    const FILE_ONLY: &'static [&'static str];

    /// The environment variable of key `section.field` (`RTN_...`).
    fn env(section: &str, field: &str) -> String;
}

/// Writes a section's flags over its value in a config `C`.
type Apply<C> = Box<dyn Fn(&mut C, &ArgMatches) -> Result<(), clap::Error>>;

/// One section of a config `C`: its TOML name, its flags, and how they are
/// written over its value.
pub struct Section<C> {
    name: &'static str,
    augment: fn(Command) -> Command,
    apply: Apply<C>,
}

impl<C: 'static> Section<C> {
    /// The section `name` of the file, held in the field `field` returns.
    pub fn new<S: clap::Args + 'static>(name: &'static str, field: fn(&mut C) -> &mut S) -> Self {
        Section {
            name,
            augment: S::augment_args,
            apply: Box::new(move |c, m| field(c).update_from_arg_matches(m)),
        }
    }

    /// Its name in the file (the `[table]`).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The section in field `$field` of the config `$config`, named in the file
/// as the field is (`section!(EdgeConfig, limits)`: `[limits]`).
#[macro_export]
macro_rules! section {
    ($config:ty, $field:ident) => {
        $crate::flags::Section::new(stringify!($field), |c: &mut $config| &mut c.$field)
    };
}

/// The flags of every section of config `C`, parsed; flatten into a
/// command's arguments (`#[command(flatten)]`), then [`Flags::apply`] to
/// the config read from the file.
pub struct Flags<C> {
    matches: ArgMatches,
    config: PhantomData<fn(&mut C)>,
}

impl<C: Flagged> Flags<C> {
    /// Writes every flag (or environment variable) given over `config`.
    pub fn apply(&self, config: &mut C) -> Result<(), clap::Error> {
        for s in C::sections() {
            (s.apply)(config, &self.matches)?;
        }
        Ok(())
    }
}

/// The flag of key `section.field`.
pub fn flag_name(section: &str, field: &str) -> String {
    format!("{section}-{field}").replace('_', "-")
}

fn augment<C: Flagged>(mut cmd: Command) -> Command {
    // update_from_arg_matches finds a field's value by the field's name (the
    // argument id), so one name must not be two arguments.
    let mut ids: HashSet<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    for s in C::sections() {
        let section = (s.augment)(Command::new(s.name));
        for arg in section.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                ids.insert(id.to_owned()),
                "config field `{id}` of [{}] is named like another argument: give it #[arg(id = \"<section>_<field>\")]",
                s.name
            );
            // A field named like another section's (`cert` of `[tls]` and
            // of `[client_tls]`) has the id `<section>_<field>`; its flag
            // and variable are still `<section>-<field>`.
            let field = id
                .strip_prefix(s.name)
                .and_then(|f| f.strip_prefix('_'))
                .unwrap_or(id);
            let mut arg = arg
                .clone()
                .long(flag_name(s.name, field))
                .env(C::env(s.name, field))
                .required(false)
                .help_heading(format!("[{}]", s.name));
            match arg.get_action() {
                // A bool field would be a switch that is always "given"
                // (false when absent), overwriting the file: it takes a
                // value instead (`--tls-dev-self-signed true`).
                ArgAction::SetTrue | ArgAction::SetFalse => {
                    arg = arg
                        .action(ArgAction::Set)
                        .value_parser(clap::value_parser!(bool));
                }
                // Lists: comma-separated, in a flag as in its variable.
                ArgAction::Append => arg = arg.value_delimiter(','),
                _ => {}
            }
            cmd = cmd.arg(arg);
        }
    }
    cmd
}

impl<C: Flagged> clap::Args for Flags<C> {
    fn augment_args(cmd: Command) -> Command {
        augment::<C>(cmd)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        augment::<C>(cmd)
    }
}

impl<C: Flagged> FromArgMatches for Flags<C> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Flags {
            matches: matches.clone(),
            config: PhantomData,
        })
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.matches = matches.clone();
        Ok(())
    }
}

/// Checks that each key `(section.field, old flag, old variable)` of `kept`
/// still answers to the flag and variable it had before every key had
/// `--<section>-<field>` (unit files, scripts and docs use them): the old
/// flag is a visible alias, the variable is the key's. Each problem is one
/// line.
pub fn check_kept_names<C: Flagged>(kept: &[(&str, &str, &str)]) -> Result<(), Vec<String>> {
    let cmd = augment::<C>(Command::new("check"));
    let mut problems = Vec::new();
    for &(key, flag, env) in kept {
        let Some((section, field)) = key.split_once('.') else {
            problems.push(format!("{key}: not section.field"));
            continue;
        };
        let long = flag_name(section, field);
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            problems.push(format!("{key}: no --{long}"));
            continue;
        };
        let names = arg.get_long_and_visible_aliases().unwrap_or_default();
        if !names.contains(&flag) {
            problems.push(format!("{key}: --{flag} not in {names:?}"));
        }
        if arg.get_env().and_then(|e| e.to_str()) != Some(env) {
            problems.push(format!("{key}: variable {:?}, not {env}", arg.get_env()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Checks that `sample`'s every key is a flag with its variable, or in a
/// file-only table, and that no secret shows: every top-level table of the
/// serialized config is a section or [`Flagged::FILE_ONLY`]; every key of a
/// section (`None`s included) is a scalar or a list with its flag
/// `--<section>-<field>` and an `RTN_*` variable, and not a secret; every
/// secret key anywhere serializes as [`REDACTED`]. Each problem is one line.
pub fn check<C: Flagged + Serialize>(sample: &C) -> Result<(), Vec<String>> {
    let cmd = augment::<C>(Command::new("check"));
    cmd.clone().debug_assert();
    let value = serde_json::to_value(sample).map_err(|e| vec![e.to_string()])?;
    let serde_json::Value::Object(tables) = value else {
        return Err(vec!["the config does not serialize as a table".into()]);
    };
    let mut problems = Vec::new();
    let sections: Vec<&str> = C::sections().iter().map(Section::name).collect();
    for name in &sections {
        if !matches!(tables.get(*name), Some(serde_json::Value::Object(_))) {
            problems.push(format!("section [{name}] is not a table of the config"));
        }
    }
    for (table, value) in &tables {
        if C::FILE_ONLY.contains(&table.as_str()) {
            continue;
        }
        let serde_json::Value::Object(fields) = value else {
            problems.push(format!(
                "`{table}` is neither a section with flags nor file-only"
            ));
            continue;
        };
        if !sections.contains(&table.as_str()) {
            problems.push(format!(
                "[{table}] has no flags: add it to sections() (or FILE_ONLY)"
            ));
            continue;
        }
        for (field, v) in fields {
            let key = format!("{table}.{field}");
            if is_secret_key(field) {
                problems.push(format!(
                    "{key} is a secret: flags show in process listings, keep it out of the sections"
                ));
            }
            if v.is_object()
                || v.as_array()
                    .is_some_and(|a| a.iter().any(|x| x.is_object()))
            {
                problems.push(format!("{key} is a table: flags take scalars and lists"));
            }
            let long = flag_name(table, field);
            match cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(long.as_str()))
            {
                None => problems.push(format!("{key} has no flag --{long}")),
                Some(a) => {
                    let env = a.get_env().map(|e| e.to_string_lossy().into_owned());
                    if !env.as_deref().is_some_and(|e| e.starts_with("RTN_")) {
                        problems.push(format!("--{long} has no RTN_* variable ({env:?})"));
                    }
                }
            }
        }
    }
    find_shown_secrets(&serde_json::Value::Object(tables), "", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Secret keys under `value` whose value is anything but [`REDACTED`].
fn find_shown_secrets(value: &serde_json::Value, path: &str, problems: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                let key = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let redacted = |v: &Value| v.is_null() || v.as_str() == Some(REDACTED);
                let shown = match v {
                    Value::Array(items) => !items.iter().all(redacted),
                    v => !redacted(v),
                };
                if is_secret_key(k) && shown {
                    problems.push(format!(
                        "{key} is a secret and serializes as itself: #[serde(serialize_with = \"control::flags::redact_each\")]"
                    ));
                }
                find_shown_secrets(v, &key, problems);
            }
        }
        Value::Array(items) => {
            for v in items {
                find_shown_secrets(v, path, problems);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde::Deserialize;

    /// A config as the binaries write theirs: a section with a flattened
    /// part, a switch, a list, an optional value; a file-only list.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    struct Config {
        #[serde(default)]
        net: Net,
        #[serde(default)]
        users: Vec<User>,
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
    struct Net {
        #[serde(default)]
        port: u16,
        #[serde(default)]
        fast: bool,
        #[serde(default)]
        hosts: Vec<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(flatten)]
        #[command(flatten)]
        inner: Inner,
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
    struct Inner {
        #[serde(default)]
        #[arg(visible_alias = "depth")]
        inner_depth: u32,
    }

    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    struct User {
        name: String,
        #[serde(serialize_with = "redact_each")]
        secrets: Vec<String>,
    }

    impl Flagged for Config {
        fn sections() -> Vec<Section<Self>> {
            vec![crate::section!(Config, net)]
        }
        const FILE_ONLY: &'static [&'static str] = &["users"];
        fn env(section: &str, field: &str) -> String {
            format!("RTN_TEST_{section}_{field}").to_uppercase()
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[arg(long)]
        config: String,
        #[command(flatten)]
        flags: Flags<Config>,
    }

    fn file() -> Config {
        toml::from_str(
            "[net]\nport = 1\nfast = true\nhosts = [\"a\"]\ninner_depth = 4\n[[users]]\nname = \"u\"\nsecrets = [\"s3cret\"]\n",
        )
        .unwrap()
    }

    /// `file()` under the flags `args` (variables are tested where the
    /// binaries run as processes: setting them here would race the other
    /// tests' threads).
    fn apply(args: &[&str]) -> Result<Config, clap::Error> {
        let cli = Cli::try_parse_from(["x", "--config", "f"].iter().chain(args))?;
        let mut c = file();
        cli.flags.apply(&mut c)?;
        Ok(c)
    }

    #[test]
    fn flags_override_the_file_and_absent_ones_leave_it() {
        let c = apply(&[]).unwrap();
        assert_eq!(c.net, file().net);
        let c = apply(&[
            "--net-port",
            "7",
            "--net-fast",
            "false",
            "--net-hosts",
            "b,c",
            "--net-name",
            "n",
            "--depth",
            "9",
        ])
        .unwrap();
        assert_eq!(
            c.net,
            Net {
                port: 7,
                fast: false,
                hosts: vec!["b".into(), "c".into()],
                name: Some("n".into()),
                inner: Inner { inner_depth: 9 },
            }
        );
        let err = apply(&["--net-port", "x"]).unwrap_err().to_string();
        assert!(err.contains("--net-port"), "{err}");
    }

    #[test]
    fn the_flags_are_named_after_the_keys_with_their_variables() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let arg = |long: &str| {
            cmd.get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("no --{long}"))
        };
        let env = |long: &str| arg(long).get_env().unwrap().to_str().unwrap().to_owned();
        assert_eq!(env("net-port"), "RTN_TEST_NET_PORT");
        assert_eq!(env("net-inner-depth"), "RTN_TEST_NET_INNER_DEPTH");
        assert_eq!(env("net-hosts"), "RTN_TEST_NET_HOSTS");
        assert!(!arg("net-port").is_required_set());
        check(&file()).unwrap();
    }

    #[test]
    fn check_finds_keys_without_flags_and_secrets_that_show() {
        #[derive(Serialize)]
        struct Drifted {
            net: Net,
            extra: Extra,
            users: Vec<Plain>,
        }
        #[derive(Serialize)]
        struct Extra {
            x: u8,
        }
        #[derive(Serialize)]
        struct Plain {
            admin_token: String,
        }
        #[derive(Serialize, clap::Args)]
        struct NetWithHidden {
            #[arg(skip)]
            hidden: u8,
        }
        impl Flagged for Drifted {
            fn sections() -> Vec<Section<Self>> {
                vec![crate::section!(Drifted, net)]
            }
            const FILE_ONLY: &'static [&'static str] = &["users"];
            fn env(_: &str, field: &str) -> String {
                field.into()
            }
        }
        let problems = check(&Drifted {
            net: Net::default(),
            extra: Extra { x: 1 },
            users: vec![Plain {
                admin_token: "t".into(),
            }],
        })
        .unwrap_err();
        let want = [
            "[extra] has no flags",
            "--net-port has no RTN_* variable",
            "users.admin_token is a secret and serializes as itself",
        ];
        for w in want {
            assert!(problems.iter().any(|p| p.contains(w)), "{w}: {problems:?}");
        }
        // A field without its flag (#[arg(skip)]).
        #[derive(Serialize)]
        struct Skipped {
            net: NetWithHidden,
        }
        impl Flagged for Skipped {
            fn sections() -> Vec<Section<Self>> {
                vec![crate::section!(Skipped, net)]
            }
            const FILE_ONLY: &'static [&'static str] = &[];
            fn env(_: &str, field: &str) -> String {
                format!("RTN_{field}")
            }
        }
        let problems = check(&Skipped {
            net: NetWithHidden { hidden: 1 },
        })
        .unwrap_err();
        assert_eq!(problems, ["net.hidden has no flag --net-hidden"]);
    }

    #[test]
    fn secret_keys_are_told_from_their_variables_and_rates() {
        for k in ["secrets", "admin_token", "password"] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "secrets_env",
            "admin_token_env",
            "joins_per_token_per_s",
            "etcd_key",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
        let user = User {
            name: "u".into(),
            secrets: vec!["a".into(), "b".into()],
        };
        let text = toml::to_string(&user).unwrap();
        assert!(
            text.contains(r#"secrets = ["<redacted>", "<redacted>"]"#),
            "{text}"
        );
    }
}
