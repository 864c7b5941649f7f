//! What an installation of the mesh is made of: the profiles, and the Helm releases a profile
//! and the user's values call for, in the order they go in. `meshctl install` renders these;
//! a Helm user runs the same releases by hand (`charts/README.md`).

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::charts::{Chart, ChartFile};
use crate::render::{self, Capabilities, Manifest, Release, RenderError};
use crate::values::{self, Overrides, Values, ValuesError};

/// The release of `charts/base` (the CRDs).
pub const BASE_RELEASE: &str = "mesh-base";
/// The release of `charts/mesh` (mesh-ca, mesh-pilot, the webhooks, the MeshConfig).
pub const CONTROL_PLANE_RELEASE: &str = "mesh";

/// A starting set of values for the control plane, kept as `charts/mesh/profiles/<name>.yaml`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Profile {
    /// mesh-ca, mesh-pilot and an ingress gateway (`mesh-ingressgateway`).
    #[default]
    Default,
    /// The default, plus an egress gateway (`mesh-egressgateway`), smaller resource requests
    /// and access logs on: for trying the mesh out on a small cluster.
    Demo,
    /// mesh-ca and mesh-pilot only, no gateway.
    Minimal,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 3] = [Profile::Default, Profile::Demo, Profile::Minimal];

    /// Its name (`default`, `demo`, `minimal`), also its file's.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Demo => "demo",
            Profile::Minimal => "minimal",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = ValuesError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| ValuesError::UnknownProfile { name: name.to_owned() })
    }
}

/// One Helm release of an installation: a chart, the name and namespace it is installed under,
/// and all the values its templates see.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleasePlan {
    /// The release name (`mesh-base`, `mesh`, `mesh-ingressgateway`).
    pub name: String,
    /// The chart's directory under `charts/`.
    pub chart: &'static str,
    /// The release's namespace.
    pub namespace: String,
    /// `.Values`, the chart's defaults included.
    pub values: Values,
}

impl ReleasePlan {
    /// The release, as the templates see it.
    pub fn release(&self) -> Release {
        Release::new(&self.name, &self.namespace)
    }

    /// The release's CRDs (`crds/`), applied before its manifests.
    pub fn crds(&self) -> Result<Vec<ChartFile>, RenderError> {
        render::crds(self.chart)
    }

    /// The release's manifests.
    pub fn render(&self, capabilities: &Capabilities) -> Result<Vec<Manifest>, RenderError> {
        render::render(self.chart, &self.values, &self.release(), capabilities)
    }
}

/// The releases that install the mesh into `namespace`, in order: [`BASE_RELEASE`] (CRDs), then
/// [`CONTROL_PLANE_RELEASE`] with `overrides` (profile, `-f` files, `--set`) over
/// `charts/mesh/values.yaml`, then one release of `charts/gateway` for each entry of the control
/// plane's `gateways` values with `enabled: true`: `gateways.<name>` becomes the release
/// `mesh-<name>gateway` (`mesh-ingressgateway`), with the control plane's `global` values and
/// `gateways.<name>.values` over the gateway chart's defaults. `overrides` apply to the control
/// plane's values only; they reach the gateways through `global` and `gateways.*.values`.
pub fn plan(overrides: &Overrides, namespace: &str) -> Result<Vec<ReleasePlan>, ValuesError> {
    let base = ReleasePlan {
        name: BASE_RELEASE.to_owned(),
        chart: Chart::get("base")?.dir(),
        namespace: namespace.to_owned(),
        values: values::values("base", &Overrides::default())?,
    };
    let mesh_values = values::values("mesh", overrides)?;
    let gateway_chart = Chart::get("gateway")?;
    let gateway_defaults = gateway_chart.default_values()?;
    let mut gateways = Vec::new();
    if let Some(entries) = mesh_values.get("gateways") {
        let entries = entries
            .as_object()
            .ok_or_else(|| invalid("gateways", "must be a map of gateway names"))?;
        for (key, entry) in entries {
            let path = format!("gateways.{key}");
            let Some(entry) = entry.as_object() else {
                return Err(invalid(&path, "must be a map with `enabled` and `values`"));
            };
            match entry.get("enabled") {
                Some(Value::Bool(true)) => {}
                Some(Value::Bool(false) | Value::Null) | None => continue,
                Some(_) => {
                    return Err(invalid(&format!("{path}.enabled"), "must be true or false"));
                }
            }
            let mut global =
                mesh_values.get("global").and_then(Value::as_object).cloned().unwrap_or_default();
            global.insert("controlPlaneNamespace".to_owned(), Value::String(namespace.to_owned()));
            let mut user =
                Values::from(Map::from_iter([("global".to_owned(), Value::Object(global))]));
            match entry.get("values") {
                Some(Value::Object(own)) => user.merge(&Values::from(own.clone())),
                None | Some(Value::Null) => {}
                Some(_) => return Err(invalid(&format!("{path}.values"), "must be a map")),
            }
            gateways.push(ReleasePlan {
                name: format!("mesh-{key}gateway"),
                chart: gateway_chart.dir(),
                namespace: namespace.to_owned(),
                values: user.with_defaults(&gateway_defaults),
            });
        }
    }
    let mesh = ReleasePlan {
        name: CONTROL_PLANE_RELEASE.to_owned(),
        chart: Chart::get("mesh")?.dir(),
        namespace: namespace.to_owned(),
        values: mesh_values,
    };
    Ok([base, mesh].into_iter().chain(gateways).collect())
}

fn invalid(path: &str, reason: &str) -> ValuesError {
    ValuesError::Invalid { path: path.to_owned(), reason: reason.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names() {
        for profile in Profile::ALL {
            assert_eq!(profile.name().parse::<Profile>(), Ok(profile));
        }
        assert_eq!(
            "full".parse::<Profile>(),
            Err(ValuesError::UnknownProfile { name: "full".to_owned() })
        );
    }
}
