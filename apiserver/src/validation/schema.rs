//! The one source of the served kinds' schemas: Kubernetes' own OpenAPI schemas as
//! k8s-openapi emits them (its `schemars` feature), decorated with what that output
//! lacks and both the validator and the strategic merge patch need — enum values,
//! patch strategies and merge keys, and each root's group/version/kind. Validation,
//! strategic merge patch and the OpenAPI documents all read this one registry, so what
//! the server advertises is what it enforces.

use std::sync::OnceLock;

use k8s_openapi::api::{apps, coordination, core, rbac};
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::resources::ResourceInfo;

/// Where `$ref`s point: OpenAPI v3's component schemas (v2 documents rewrite it).
pub const REF_PREFIX: &str = "#/components/schemas/";

/// The decorated definitions, by OpenAPI name (`io.k8s.api.core.v1.Pod`), and the root
/// definition of each served kind.
pub struct Schemas {
    defs: Map<String, Value>,
    roots: Vec<Root>,
}

/// A served kind's root definition.
#[derive(Debug, Clone)]
pub struct Root {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub def: String,
}

/// Lists merged by key (or, without key, as sets) by strategic merge patch, as in
/// Kubernetes' Go struct tags: (definition, property, patch strategy, merge key).
const PATCH_META: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        Some("name"),
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        Some("type"),
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        Some("uid"),
    ),
];

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const CONDITION_STATUS: &[&str] = &["True", "False", "Unknown"];

/// Closed sets of string values (kube's `+enum` types), enforced by validation and
/// advertised as `enum` in OpenAPI: (definition, property, allowed values).
const ENUMS: &[(&str, &str, &[&str])] = &[
    (
        "io.k8s.api.core.v1.PodSpec",
        "restartPolicy",
        &["Always", "OnFailure", "Never"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "dnsPolicy",
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "preemptionPolicy",
        &["Never", "PreemptLowerPriority"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "imagePullPolicy",
        &["Always", "IfNotPresent", "Never"],
    ),
    (
        "io.k8s.api.core.v1.Container",
        "terminationMessagePolicy",
        &["File", "FallbackToLogsOnError"],
    ),
    ("io.k8s.api.core.v1.Container", "restartPolicy", &["Always"]),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "imagePullPolicy",
        &["Always", "IfNotPresent", "Never"],
    ),
    ("io.k8s.api.core.v1.ContainerPort", "protocol", PROTOCOLS),
    ("io.k8s.api.core.v1.ServicePort", "protocol", PROTOCOLS),
    ("io.k8s.api.core.v1.EndpointPort", "protocol", PROTOCOLS),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "type",
        &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "sessionAffinity",
        &["ClientIP", "None"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "externalTrafficPolicy",
        &["Cluster", "Local"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "internalTrafficPolicy",
        &["Cluster", "Local"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ipFamilyPolicy",
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
    ),
    (
        "io.k8s.api.core.v1.HTTPGetAction",
        "scheme",
        &["HTTP", "HTTPS"],
    ),
    ("io.k8s.api.core.v1.Taint", "effect", EFFECTS),
    (
        "io.k8s.api.core.v1.Toleration",
        "operator",
        &["Exists", "Equal"],
    ),
    (
        "io.k8s.api.core.v1.Toleration",
        "effect",
        &["NoSchedule", "PreferNoSchedule", "NoExecute", ""],
    ),
    (
        "io.k8s.api.core.v1.NodeSelectorRequirement",
        "operator",
        &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement",
        "operator",
        &["In", "NotIn", "Exists", "DoesNotExist"],
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "phase",
        &["Pending", "Running", "Succeeded", "Failed", "Unknown"],
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "phase",
        &["Active", "Terminating"],
    ),
    (
        "io.k8s.api.core.v1.PodCondition",
        "status",
        CONDITION_STATUS,
    ),
    (
        "io.k8s.api.core.v1.NodeCondition",
        "status",
        CONDITION_STATUS,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentCondition",
        "status",
        CONDITION_STATUS,
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetCondition",
        "status",
        CONDITION_STATUS,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStrategy",
        "type",
        &["Recreate", "RollingUpdate"],
    ),
    (
        "io.k8s.api.rbac.v1.Subject",
        "kind",
        &["User", "Group", "ServiceAccount"],
    ),
    (
        "io.k8s.api.rbac.v1.RoleRef",
        "kind",
        &["Role", "ClusterRole"],
    ),
];

/// Adds one kind's schema (and everything it references) to the generator.
fn add<T: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
    roots: &mut Vec<Root>,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
) {
    let reference = generator.subschema_for::<T>();
    let def = reference
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(REF_PREFIX))
        .expect("k8s-openapi root types are referenced, not inlined")
        .to_string();
    roots.push(Root {
        group,
        version,
        kind,
        def,
    });
}

fn build() -> Schemas {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    let mut g = settings.into_generator();
    let mut roots = Vec::new();
    let r = &mut roots;
    add::<core::v1::Namespace>(&mut g, r, "", "v1", "Namespace");
    add::<core::v1::Node>(&mut g, r, "", "v1", "Node");
    add::<core::v1::Pod>(&mut g, r, "", "v1", "Pod");
    add::<core::v1::Service>(&mut g, r, "", "v1", "Service");
    add::<core::v1::Endpoints>(&mut g, r, "", "v1", "Endpoints");
    add::<core::v1::Event>(&mut g, r, "", "v1", "Event");
    add::<core::v1::ServiceAccount>(&mut g, r, "", "v1", "ServiceAccount");
    add::<core::v1::ConfigMap>(&mut g, r, "", "v1", "ConfigMap");
    add::<core::v1::Secret>(&mut g, r, "", "v1", "Secret");
    add::<core::v1::Binding>(&mut g, r, "", "v1", "Binding");
    add::<coordination::v1::Lease>(&mut g, r, "coordination.k8s.io", "v1", "Lease");
    add::<apps::v1::Deployment>(&mut g, r, "apps", "v1", "Deployment");
    add::<apps::v1::ReplicaSet>(&mut g, r, "apps", "v1", "ReplicaSet");
    add::<k8s_openapi::api::autoscaling::v1::Scale>(&mut g, r, "autoscaling", "v1", "Scale");
    let rbac_group = "rbac.authorization.k8s.io";
    add::<rbac::v1::Role>(&mut g, r, rbac_group, "v1", "Role");
    add::<rbac::v1::RoleBinding>(&mut g, r, rbac_group, "v1", "RoleBinding");
    add::<rbac::v1::ClusterRole>(&mut g, r, rbac_group, "v1", "ClusterRole");
    add::<rbac::v1::ClusterRoleBinding>(&mut g, r, rbac_group, "v1", "ClusterRoleBinding");
    let authz = "authorization.k8s.io";
    use k8s_openapi::api::authorization::v1 as authz_v1;
    add::<authz_v1::SelfSubjectAccessReview>(&mut g, r, authz, "v1", "SelfSubjectAccessReview");
    add::<authz_v1::SelfSubjectRulesReview>(&mut g, r, authz, "v1", "SelfSubjectRulesReview");
    use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
    add::<meta::Status>(&mut g, r, "", "v1", "Status");
    add::<meta::DeleteOptions>(&mut g, r, "", "v1", "DeleteOptions");
    add::<meta::WatchEvent<k8s_openapi::apimachinery::pkg::runtime::RawExtension>>(
        &mut g,
        r,
        "",
        "v1",
        "WatchEvent",
    );
    // Referenced by list documents only, so not reached from any root.
    let _ = g.subschema_for::<meta::ListMeta>();
    let mut defs = g.take_definitions(false);
    decorate(&mut defs, &roots);
    Schemas { defs, roots }
}

/// Adds the enums, patch metadata and group/version/kinds the generated schemas lack.
fn decorate(defs: &mut Map<String, Value>, roots: &[Root]) {
    for (def, prop, strategy, key) in PATCH_META {
        if let Some(p) = property_mut(defs, def, prop) {
            p.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if let Some(key) = key {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
        }
    }
    for (def, prop, values) in ENUMS {
        if let Some(p) = property_mut(defs, def, prop) {
            p.insert("enum".into(), json!(values));
        }
    }
    for root in roots {
        if let Some(Value::Object(d)) = defs.get_mut(&root.def) {
            d.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": root.group, "version": root.version, "kind": root.kind}]),
            );
        }
    }
}

fn property_mut<'a>(
    defs: &'a mut Map<String, Value>,
    def: &str,
    prop: &str,
) -> Option<&'a mut Map<String, Value>> {
    defs.get_mut(def)?
        .get_mut("properties")?
        .get_mut(prop)?
        .as_object_mut()
}

/// The process-wide registry, built on first use (a few milliseconds).
pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(build)
}

impl Schemas {
    /// Every definition, by OpenAPI name.
    pub fn definitions(&self) -> &Map<String, Value> {
        &self.defs
    }

    /// The root definitions of the served kinds and the auxiliary kinds (Scale, Status, ...).
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// The root definition name of a served resource's kind.
    pub fn root_of(&self, resource: &ResourceInfo) -> Option<&str> {
        self.root_of_kind(resource.group, resource.kind)
    }

    /// The root definition name of a kind in a group.
    pub fn root_of_kind(&self, group: &str, kind: &str) -> Option<&str> {
        self.roots
            .iter()
            .find(|r| r.group == group && r.kind == kind)
            .map(|r| r.def.as_str())
    }

    /// One definition by name.
    pub fn def(&self, name: &str) -> Option<&Value> {
        self.defs.get(name)
    }

    /// Follows a `$ref` (or kube's `allOf: [{$ref}]` wrapping) to the definition it names;
    /// any other schema is returned as it is.
    pub fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let target = schema.get("$ref").and_then(Value::as_str).or_else(|| {
            schema
                .get("allOf")
                .and_then(|a| a.get(0))
                .and_then(|s| s.get("$ref"))
                .and_then(Value::as_str)
        });
        match target
            .and_then(|r| r.strip_prefix(REF_PREFIX))
            .and_then(|n| self.defs.get(n))
        {
            Some(d) => d,
            None => schema,
        }
    }

    /// The name of the definition a schema refers to, if it is a reference.
    pub fn ref_name<'a>(&self, schema: &'a Value) -> Option<&'a str> {
        schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(REF_PREFIX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;

    #[test]
    fn every_served_kind_has_a_root() {
        let s = schemas();
        for r in RESOURCES {
            let def = s.root_of(r).unwrap_or_else(|| panic!("{}", r.kind));
            let d = s.def(def).unwrap();
            assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], r.kind);
        }
        assert_eq!(s.root_of_kind("", "Pod"), Some("io.k8s.api.core.v1.Pod"));
    }

    #[test]
    fn decorations_land_on_existing_properties() {
        let s = schemas();
        for (def, prop, ..) in PATCH_META {
            let p = &s.def(def).unwrap_or_else(|| panic!("{def}"))["properties"][prop];
            assert!(
                p.get("x-kubernetes-patch-strategy").is_some(),
                "{def}.{prop}"
            );
        }
        for (def, prop, _) in ENUMS {
            let p = &s.def(def).unwrap_or_else(|| panic!("{def}"))["properties"][prop];
            assert!(p.get("enum").is_some(), "{def}.{prop}");
        }
    }

    #[test]
    fn references_resolve() {
        let s = schemas();
        let pod = s.def("io.k8s.api.core.v1.Pod").unwrap();
        let spec = s.resolve(&pod["properties"]["spec"]);
        assert!(spec["properties"]["containers"].is_object());
        let item = &spec["properties"]["containers"]["items"];
        assert_eq!(s.ref_name(item), Some("io.k8s.api.core.v1.Container"));
        assert!(s.resolve(item)["properties"]["image"].is_object());
    }
}
