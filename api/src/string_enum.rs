//! Enumerations that travel as strings (`mode: STRICT`).
//!
//! Deserializing never fails on a value we do not know: it is kept as `Unknown(value)` so that
//! [`crate::validate`] can name the field and list the accepted values, and so that one object with
//! a typo cannot make a whole Kubernetes list unreadable. The JSON schema still lists only the known
//! values, so an API server with our CRDs refuses typos at admission.

/// What validation needs of a string enumeration.
pub trait StringEnum {
    /// Every value this version understands.
    const KNOWN: &'static [&'static str];
    /// The value as written.
    fn as_str(&self) -> &str;
    /// Whether the value is one of [`Self::KNOWN`].
    fn is_known(&self) -> bool;
}

/// Declares a string enumeration with an `Unknown(String)` fallback (see the module docs).
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version of the mesh does not know, kept verbatim so that validation
            /// can report it.
            Unknown(String),
        }

        impl $name {
            /// Every value this version understands, in declaration order.
            pub const KNOWN: &'static [&'static str] = &[$($wire),+];

            /// The value as written in YAML.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Unknown(other) => other,
                }
            }

            /// Whether the value is one of [`Self::KNOWN`].
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Unknown(_))
            }
        }

        impl $crate::string_enum::StringEnum for $name {
            const KNOWN: &'static [&'static str] = $name::KNOWN;

            fn as_str(&self) -> &str {
                $name::as_str(self)
            }

            fn is_known(&self) -> bool {
                $name::is_known(self)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                match value {
                    $( $wire => Self::$variant, )+
                    other => Self::Unknown(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Ok(Self::from(value.as_str()))
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "enum": Self::KNOWN,
                })
            }
        }
    };
}
