//! How an option is declared, once: [`options!`] expands one table of options
//! into the clap arguments (flag, `FLARE_*` variable, help with its default),
//! the config file's keys, the field-by-field merge of two layers, the default
//! accessors and the description [`OptionDoc`] the configuration reference is
//! written from.
//!
//! A value is parsed into its type where it comes in: by clap for a flag or a
//! variable, by [`OptionValue::from_toml`] for a key of the file, so a bad one
//! stops the program at start-up and names the option.

use std::path::PathBuf;

/// One option as the configuration reference shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionDoc {
    /// The config file's table (`worker`, `docker`, ...).
    pub table: &'static str,
    /// The key in that table.
    pub key: &'static str,
    /// The flag, without its dashes.
    pub flag: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The default as text: a value a flag could give, or what happens
    /// without one; `None` when there is none.
    pub default: Option<String>,
    /// The default as TOML, when it is a value the file could give (the
    /// example file shows it set).
    pub default_toml: Option<String>,
    /// What the option does.
    pub help: String,
    /// An example of the option's value in TOML (for the example file).
    pub example: Option<String>,
}

/// A bad value of an option in the config file.
#[derive(Debug, thiserror::Error)]
pub enum FileValueError {
    /// The TOML value is not of the option's type.
    #[error(transparent)]
    Type(Box<toml::de::Error>),
    /// The text does not parse.
    #[error(transparent)]
    Parse(Box<dyn std::error::Error + Send + Sync>),
}

impl From<toml::de::Error> for FileValueError {
    fn from(error: toml::de::Error) -> Self {
        FileValueError::Type(Box::new(error))
    }
}

/// A type an option's value can have: read from a TOML value, shown as a flag
/// would give it.
pub trait OptionValue: Sized {
    /// The value of a key of the config file.
    ///
    /// # Errors
    /// A [`FileValueError`] saying why it is not one.
    fn from_toml(value: toml::Value) -> Result<Self, FileValueError>;

    /// The value as a flag gives it (a list comma-separated).
    fn flag_text(&self) -> String;

    /// The value as TOML (for the example file).
    fn toml_text(&self) -> String {
        toml_string(&self.flag_text())
    }
}

/// `text` as a TOML string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Values TOML has a type of its own for: read by serde, shown by `Display`.
macro_rules! value_by_serde {
    ($($ty:ty => $toml:expr),* $(,)?) => {$(
        impl OptionValue for $ty {
            fn from_toml(value: toml::Value) -> Result<Self, FileValueError> {
                Ok(value.try_into()?)
            }
            fn flag_text(&self) -> String {
                self.to_string()
            }
            fn toml_text(&self) -> String {
                let toml: fn(&$ty) -> String = $toml;
                toml(self)
            }
        }
    )*};
}

value_by_serde! {
    String => |text| toml_string(text),
    u32 => |n| n.to_string(),
    u64 => |n| n.to_string(),
    i64 => |n| n.to_string(),
    usize => |n| n.to_string(),
    f64 => |n| n.to_string(),
    bool => |b| b.to_string(),
}

impl OptionValue for PathBuf {
    fn from_toml(value: toml::Value) -> Result<Self, FileValueError> {
        Ok(value.try_into()?)
    }
    fn flag_text(&self) -> String {
        self.display().to_string()
    }
}

impl<T: OptionValue> OptionValue for Vec<T> {
    fn from_toml(value: toml::Value) -> Result<Self, FileValueError> {
        let items: Vec<toml::Value> = value.try_into()?;
        items.into_iter().map(T::from_toml).collect()
    }
    fn flag_text(&self) -> String {
        self.iter().map(T::flag_text).collect::<Vec<_>>().join(",")
    }
    fn toml_text(&self) -> String {
        let items: Vec<String> = self.iter().map(T::toml_text).collect();
        format!("[{}]", items.join(", "))
    }
}

/// Values written as text in every layer: parsed by `FromStr`, shown by
/// `Display`.
macro_rules! value_by_text {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::config::options::OptionValue for $ty {
            fn from_toml(
                value: toml::Value,
            ) -> Result<Self, $crate::config::options::FileValueError> {
                let text: String = value.try_into()?;
                text.parse::<$ty>()
                    .map_err(|e| $crate::config::options::FileValueError::Parse(e.into()))
            }
            fn flag_text(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
pub(crate) use value_by_text;

/// Choices (`clap::ValueEnum`, serde's names the same): shown by their name.
macro_rules! value_by_choice {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::config::options::OptionValue for $ty {
            fn from_toml(
                value: toml::Value,
            ) -> Result<Self, $crate::config::options::FileValueError> {
                Ok(value.try_into()?)
            }
            fn flag_text(&self) -> String {
                clap::ValueEnum::to_possible_value(self)
                    .map(|value| value.get_name().to_owned())
                    .unwrap_or_default()
            }
        }
    )*};
}
pub(crate) use value_by_choice;

/// The name of an option's value in the help: its variable's without `FLARE_`.
pub fn value_name(env: &'static str) -> &'static str {
    env.strip_prefix("FLARE_").unwrap_or(env)
}

/// The help of an option: its doc lines, then its default.
pub fn help(doc: &[&str], default: Option<&str>) -> String {
    let text = doc.iter().map(|line| line.trim()).collect::<Vec<_>>();
    let text = text.join(" ");
    match default {
        Some(default) => format!("{text} [default: {default}]"),
        None => text,
    }
}

/// The default of an option as text (see [`options!`]).
macro_rules! default_text {
    ($ty:ty; value($($default:tt)*)) => {
        Some(<$ty as $crate::config::options::OptionValue>::flag_text(&{
            let value: $ty = $($default)*;
            value
        }))
    };
    ($ty:ty; text($text:literal)) => {
        Some(String::from($text))
    };
    ($ty:ty; none) => {
        None::<String>
    };
}
pub(crate) use default_text;

/// The default of an option as TOML, if it is a value.
macro_rules! default_toml {
    ($ty:ty; value($($default:tt)*)) => {
        Some(<$ty as $crate::config::options::OptionValue>::toml_text(&{
            let value: $ty = $($default)*;
            value
        }))
    };
    ($ty:ty; $kind:ident $(($text:literal))?) => {
        None::<String>
    };
}
pub(crate) use default_toml;

/// For an option with a default value, the method of its name that gives the
/// value or that default.
macro_rules! default_accessor {
    ($field:ident: $ty:ty; value($($default:tt)*)) => {
        #[doc = concat!("`", stringify!($field), "` as given, else its default.")]
        pub fn $field(&self) -> $ty {
            self.$field.clone().unwrap_or_else(|| $($default)*)
        }
    };
    ($field:ident: $ty:ty; $kind:ident $(($text:literal))?) => {};
}
pub(crate) use default_accessor;

/// The clap settings of an on/off option (`kind: switch`): the flag alone turns
/// it on, `--flag=false` off, and its variable takes `true`, `false`, `1`,
/// `0`, `yes`, `no`, `on` or `off`.
pub mod switch {
    /// A value may follow the flag (after `=`), or not.
    pub fn num_args() -> clap::builder::ValueRange {
        (0..=1).into()
    }

    /// The words taken for on and off.
    pub fn parser() -> clap::builder::BoolishValueParser {
        clap::builder::BoolishValueParser::new()
    }
}

/// Declares a table of options, each once:
///
/// ```text
/// options! {
///     /// What the table is.
///     #[derive(Debug, Clone, Default, PartialEq)]
///     pub struct DockerArgs in "docker" {
///         /// Help of the option
///         pids_limit: i64 {
///             flag: "docker-pids-limit",
///             env: "FLARE_DOCKER_PIDS_LIMIT",
///             default: value(4096),          // or text("prose"), or none
///             example: "4096",               // optional, TOML
///             kind: switch,                  // optional: an on/off option (see [`switch`])
///             clap: (value_name = "N"),      // optional, more clap attributes
///         },
///     }
/// }
/// ```
///
/// gives the struct with an `Option` field per option (a clap argument whose id
/// and long name are the flag, its value named like its variable), `TABLE`, `or` (the first layer's values where
/// set, else the second's), `take_from` (its keys of a table of the config
/// file, parsed), `options()` (their [`OptionDoc`]s), and for each option with
/// a default value a method of its name that applies it.
macro_rules! options {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident in $table:literal {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $ty:ty {
                    flag: $flag:literal,
                    env: $env:literal,
                    default: $kind:ident $(($($default:tt)*))?
                    $(, example: $example:literal)?
                    $(, kind: $kind_of:ident)?
                    $(, clap: ($($clap:tt)*))?
                    $(,)?
                }
            ),* $(,)?
        }
    ) => {
        #[derive(clap::Args)]
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[doc = $doc])*
                #[arg(
                    id = $flag,
                    long = $flag,
                    env = $env,
                    value_name = $crate::config::options::value_name($env),
                    help = $crate::config::options::help(
                        &[$($doc),*],
                        $crate::config::options::default_text!($ty; $kind $(($($default)*))?).as_deref(),
                    )
                    $(
                        , num_args = $crate::config::options::$kind_of::num_args()
                        , require_equals = true
                        , default_missing_value = "true"
                        , value_parser = $crate::config::options::$kind_of::parser()
                    )?
                    $(, $($clap)*)?
                )]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// The config file's table of these options.
            pub const TABLE: &'static str = $table;

            /// `self`'s values where set, else `fallback`'s.
            pub fn or(self, fallback: Self) -> Self {
                Self {
                    $($field: self.$field.or(fallback.$field),)*
                }
            }

            /// Takes this table's keys out of `table` (the file's), parsed;
            /// the keys it does not know stay.
            ///
            /// # Errors
            /// The first bad value, with the option it belongs to.
            pub fn take_from(
                table: &mut toml::Table,
            ) -> Result<Self, $crate::config::BadFileValue> {
                Ok(Self {
                    $($field: match table.remove(stringify!($field)) {
                        None => None,
                        Some(value) => Some(
                            <$ty as $crate::config::options::OptionValue>::from_toml(value)
                                .map_err(|source| $crate::config::BadFileValue {
                                    table: $table,
                                    key: stringify!($field),
                                    flag: $flag,
                                    source,
                                })?,
                        ),
                    },)*
                })
            }

            /// The options of this table, as declared.
            pub fn options() -> Vec<$crate::config::options::OptionDoc> {
                vec![$($crate::config::options::OptionDoc {
                    table: $table,
                    key: stringify!($field),
                    flag: $flag,
                    env: $env,
                    default: $crate::config::options::default_text!($ty; $kind $(($($default)*))?),
                    default_toml: $crate::config::options::default_toml!($ty; $kind $(($($default)*))?),
                    help: $crate::config::options::help(&[$($doc),*], None),
                    example: None::<String> $(.or(Some(String::from($example))))?,
                },)*]
            }

            $($crate::config::options::default_accessor!($field: $ty; $kind $(($($default)*))?);)*
        }
    };
}
pub(crate) use options;
