//! Validation of one parsed policy document: each `spec` field checked where it is written and turned
//! into a [`FailoverPolicy`] (every error is the field path and the reason).

use super::*;
use crate::config::error::Invalid;

pub(super) fn spec_backups() -> FieldPath {
    FieldPath::root().key("spec").key("backups")
}

pub(super) fn check_kind(value: &serde_yaml_ng::Value) -> Result<(), Invalid> {
    let root = FieldPath::root();
    let Some(map) = value.as_mapping() else {
        return Err((
            root,
            format!(
                "a policy document must be a mapping with `kind: {KIND}`, `metadata` and `spec`"
            ),
        ));
    };
    match map.get("kind") {
        None => Err((
            root.key("kind"),
            format!("missing field `kind` (expected `kind: {KIND}`)"),
        )),
        Some(serde_yaml_ng::Value::String(kind)) if kind == KIND => Ok(()),
        Some(other) => {
            let shown = match other {
                serde_yaml_ng::Value::String(s) => s.clone(),
                v => serde_yaml_ng::to_string(v)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            let hint = yaml::hint(&shown, &[KIND]);
            Err((
                root.key("kind"),
                format!("unsupported kind `{shown}`, expected `{KIND}`{hint}"),
            ))
        }
    }
}

/// Range-checks an integer setting.
fn in_range(
    path: &FieldPath,
    value: i64,
    min: i64,
    max: i64,
    explain: &str,
) -> Result<u32, Invalid> {
    if value < min || value > max {
        return Err((
            path.clone(),
            format!("must be between {min} and {max}{explain}, got {value}"),
        ));
    }
    Ok(value as u32)
}

pub(super) fn build(
    raw: RawPolicy,
) -> Result<(PolicyScope, String, String, FailoverPolicy), Invalid> {
    let meta = FieldPath::root().key("metadata");
    let name = raw.metadata.name.ok_or_else(|| {
        (
            meta.key("name"),
            "missing field `name` (every policy needs a name)".to_string(),
        )
    })?;
    yaml::check_dns_subdomain(&name, "policy name").map_err(|r| (meta.key("name"), r))?;
    let namespace = raw.metadata.namespace.ok_or_else(|| {
        (
            meta.key("namespace"),
            "missing field `namespace` (use \"*\" for the mesh-wide default)".to_string(),
        )
    })?;
    if namespace != "*" {
        yaml::check_dns_label(&namespace, "namespace").map_err(|r| {
            (
                meta.key("namespace"),
                format!("{r}, or \"*\" for the mesh default"),
            )
        })?;
    }

    let spec_path = FieldPath::root().key("spec");
    let spec = raw.spec;
    if spec.port.is_some() && spec.service.is_none() {
        return Err((
            spec_path.key("port"),
            "`port` selects one port of one service: set spec.service too".to_string(),
        ));
    }
    let scope = match (namespace.as_str(), spec.service) {
        ("*", Some(_)) => {
            return Err((
                spec_path.key("service"),
                "a mesh default (namespace \"*\") applies to every service; remove `service`, or \
                 set metadata.namespace to the service's namespace"
                    .to_string(),
            ))
        }
        ("*", None) => PolicyScope::Mesh,
        (ns, None) => PolicyScope::Namespace(ns.to_string()),
        (ns, Some(service)) => {
            yaml::check_dns_label(&service, "service name")
                .map_err(|r| (spec_path.key("service"), r))?;
            let id = ServiceId::new(ns, service);
            match &spec.port {
                Some(port) => PolicyScope::ServicePort(id, port.value_at(spec_path.key("port"))?),
                None => PolicyScope::Service(id),
            }
        }
    };

    let mut policy = FailoverPolicy::default();

    if let Some(keys) = spec.failover_priority {
        let path = spec_path.key("failoverPriority");
        if keys.is_empty() {
            return Err((
                path,
                format!(
                    "must list at least one label key; omit it for the default order ({})",
                    default_failover_priority()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let mut parsed: Vec<PriorityKey> = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let key = parse_priority_key(key).map_err(|r| (path.index(i), r))?;
            if let Some(first) = parsed.iter().position(|k| k.label == key.label) {
                let label = &key.label;
                return Err((
                    path.index(i),
                    format!(
                        "duplicate label key `{label}` (also failoverPriority[{first}]); a key may \
                         appear once, pinned (`{label}=VALUE`) or not"
                    ),
                ));
            }
            parsed.push(key);
        }
        policy.failover_priority = parsed;
        policy.prefer_own_cluster = false;
    }

    if let Some(rules) = spec.failover {
        let path = spec_path.key("failover");
        let mut seen: Vec<RegionFailover> = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            for (field, value) in [("from", &rule.from), ("to", &rule.to)] {
                if value.trim().is_empty() {
                    return Err((path.index(i).key(field), "must name a region".to_string()));
                }
            }
            if rule.from == rule.to {
                return Err((
                    path.index(i),
                    format!(
                        "`from` and `to` are both `{}`: a region cannot fail over to itself",
                        rule.from
                    ),
                ));
            }
            let rule = RegionFailover {
                from: rule.from,
                to: rule.to,
            };
            if let Some(first) = seen.iter().position(|r| *r == rule) {
                return Err((
                    path.index(i),
                    format!(
                        "duplicate rule {} → {} (also failover[{first}])",
                        rule.from, rule.to
                    ),
                ));
            }
            seen.push(rule);
        }
        policy.failover = seen;
    }

    if let Some(backups) = spec.backups {
        policy.backups = build_backups(&scope, &namespace, backups)?;
    }

    if let Some(raw) = spec
        .outlier_detection
        .as_ref()
        .filter(|raw| raw.enabled == Some(false))
    {
        let path = spec_path.key("outlierDetection");
        let others = [
            ("consecutive5xx", raw.consecutive_5xx.is_some()),
            (
                "consecutiveGatewayFailure",
                raw.consecutive_gateway_failure.is_some(),
            ),
            ("interval", raw.interval.is_some()),
            ("baseEjectionTime", raw.base_ejection_time.is_some()),
            ("maxEjectionPercent", raw.max_ejection_percent.is_some()),
        ];
        if let Some((key, _)) = others.iter().find(|(_, set)| *set) {
            return Err((
                path.key(key),
                format!(
                    "`enabled: false` switches outlier detection off, so `{key}` would have no \
                     effect: remove `{key}`, or remove `enabled: false`"
                ),
            ));
        }
        policy.outlier_detection = None;
    } else if let Some(raw) = spec.outlier_detection {
        let path = spec_path.key("outlierDetection");
        let mut od = OutlierDetection::default();
        let count = |key: &str, v: i64| in_range(&path.key(key), v, 0, u32::MAX as i64, "");
        if let Some(v) = raw.consecutive_5xx {
            od.consecutive_5xx = count("consecutive5xx", v)?;
        }
        if let Some(v) = raw.consecutive_gateway_failure {
            od.consecutive_gateway_failure = count("consecutiveGatewayFailure", v)?;
        }
        if let Some(v) = &raw.interval {
            od.interval = v.value_at(path.key("interval"))?;
        }
        if let Some(v) = &raw.base_ejection_time {
            od.base_ejection_time = v.value_at(path.key("baseEjectionTime"))?;
        }
        if let Some(v) = raw.max_ejection_percent {
            let key = path.key("maxEjectionPercent");
            od.max_ejection_percent = in_range(&key, v, 0, 100, " (percent)")?;
            if od.max_ejection_percent == 0 {
                return Err((
                    key,
                    "0 means no host can ever be ejected, so traffic could never fail over to \
                     another locality; use 100 to let a whole dead zone be ejected"
                        .to_string(),
                ));
            }
        }
        if od.consecutive_5xx == 0 && od.consecutive_gateway_failure == 0 {
            return Err((
                path,
                "consecutive5xx and consecutiveGatewayFailure are both 0: outlier detection would \
                 never eject a host, so traffic could never fail over to another locality; set at \
                 least one of them above 0"
                    .to_string(),
            ));
        }
        policy.outlier_detection = Some(od);
    }

    if let Some(v) = spec.overprovisioning_factor {
        policy.overprovisioning_factor = in_range(
            &spec_path.key("overprovisioningFactor"),
            v,
            100,
            100_000,
            " (below 100 even a fully healthy level would spill traffic to the next one)",
        )?;
    }
    if let Some(v) = spec.panic_threshold {
        policy.panic_threshold = in_range(
            &spec_path.key("panicThreshold"),
            v,
            0,
            100,
            " (percent; 0 disables panic mode)",
        )?;
    }
    if let Some(v) = spec.mtls {
        policy.mtls = match v.to_ascii_uppercase().as_str() {
            "STRICT" => MtlsMode::Strict,
            "DISABLE" => MtlsMode::Disable,
            _ => {
                let hint = yaml::hint(&v, &["STRICT", "DISABLE"]);
                return Err((
                    spec_path.key("mtls"),
                    format!("must be STRICT or DISABLE, got {v:?}{hint}"),
                ));
            }
        };
    }

    if let Some(rules) = spec.distribute {
        policy.distribute = build_distribute(rules)?;
    }
    if let Some(raw) = spec.health_check {
        policy.health_check = Some(build_health_check(raw)?);
    }
    if let Some(v) = spec.spillover {
        let path = spec_path.key("spillover");
        policy.spillover = match v.to_ascii_lowercase().as_str() {
            "gradual" => Spillover::Gradual,
            "allornothing" => Spillover::AllOrNothing,
            _ => {
                let hint = yaml::hint(&v, &["gradual", "allOrNothing"]);
                return Err((
                    path,
                    format!("must be `gradual` (the default) or `allOrNothing`, got {v:?}{hint}"),
                ));
            }
        };
        if policy.spillover == Spillover::AllOrNothing {
            if spec.overprovisioning_factor.is_some() {
                return Err((
                    path,
                    format!(
                        "`spillover: allOrNothing` sets the overprovisioning factor itself (to \
                         {ALL_OR_NOTHING_FACTOR}), so spec.overprovisioningFactor must not be set \
                         too: remove spec.overprovisioningFactor, or use `spillover: gradual` with it"
                    ),
                ));
            }
            policy.overprovisioning_factor = ALL_OR_NOTHING_FACTOR;
        }
    }

    if let Some(raw) = spec.fleet_failover {
        policy.fleet_failover = build_fleet_failover(raw)?;
    }

    Ok((scope, namespace, name, policy))
}

fn build_fleet_failover(raw: RawFleetFailover) -> Result<FleetFailover, Invalid> {
    let path = FieldPath::root().key("spec").key("fleetFailover");
    let mut fleet = FleetFailover::default();
    if let Some(v) = raw.mode {
        fleet.mode = match v.to_ascii_lowercase().as_str() {
            "off" => FleetMode::Off,
            "observe" => FleetMode::Observe,
            "enforce" => FleetMode::Enforce,
            _ => {
                let hint = yaml::hint(&v, &["off", "observe", "enforce"]);
                return Err((
                    path.key("mode"),
                    format!("must be `off` (the default), `observe` or `enforce`, got {v:?}{hint}"),
                ));
            }
        };
    }
    if let Some(v) = raw.min_reporters {
        fleet.min_reporters = in_range(
            &path.key("minReporters"),
            v,
            2,
            100_000,
            " (clients; the server never acts on the reports of one client)",
        )?;
    }
    if let Some(v) = raw.min_requests {
        fleet.min_requests = u64::from(in_range(
            &path.key("minRequests"),
            v,
            1,
            1_000_000_000,
            " (requests within the window, all reporters together)",
        )?);
    }
    if let Some(v) = raw.error_ratio {
        fleet.error_ratio = Ratio::new(v).ok_or_else(|| {
            (
                path.key("errorRatio"),
                format!(
                    "must be a fraction of the requests above 0 and at most 1 (0.5: half of them \
                     failed), got {v}"
                ),
            )
        })?;
    }
    if let Some(v) = &raw.window {
        fleet.window = v.value_at(path.key("window"))?;
        if fleet.window < std::time::Duration::from_secs(1) {
            return Err((
                path.key("window"),
                format!(
                    "must be at least 1s (clients report their load every few seconds), got {:?}",
                    fleet.window
                ),
            ));
        }
    }
    if let Some(v) = &raw.eject_for {
        fleet.eject_for = v.value_at(path.key("ejectFor"))?;
    }
    if fleet.eject_for < fleet.window {
        let key = if raw.eject_for.is_some() {
            "ejectFor"
        } else {
            "window"
        };
        return Err((
            path.key(key),
            format!(
                "ejectFor ({:?}) must be at least window ({:?}): the errors that ejected a locality \
                 must have left the window before it is judged again, or it would be ejected again \
                 on old evidence",
                fleet.eject_for, fleet.window
            ),
        ));
    }
    if let Some(v) = raw.max_ejected_percent {
        let key = path.key("maxEjectedPercent");
        fleet.max_ejected_percent = in_range(&key, v, 0, 100, " (percent)")?;
        if fleet.max_ejected_percent == 0 {
            return Err((
                key,
                "0 means no locality can ever be ejected; use `mode: observe` to only watch the \
                 verdicts"
                    .to_string(),
            ));
        }
    }
    Ok(fleet)
}

/// One `failoverPriority` entry: `label` (compared with the client's value) or `label=value` (a pin).
fn parse_priority_key(text: &str) -> Result<PriorityKey, String> {
    if text.trim().is_empty() {
        return Err("label keys must not be empty".to_string());
    }
    if text.contains(char::is_whitespace) {
        return Err(format!("label key {text:?} contains whitespace"));
    }
    let Some((label, value)) = text.split_once('=') else {
        return Ok(PriorityKey::label(text));
    };
    if label.is_empty() {
        return Err(format!(
            "`{text}` pins no label: write `LABEL=VALUE`, like `topology.istio.io/network={value}`"
        ));
    }
    if value.is_empty() {
        return Err(format!(
            "`{text}` pins `{label}` to an empty value: write `{label}=VALUE`, or just `{label}` to \
             compare endpoints with the client's own value"
        ));
    }
    if value.contains('=') {
        return Err(format!(
            "`{text}` has more than one `=`: write `LABEL=VALUE` (label values cannot contain `=`)"
        ));
    }
    Ok(PriorityKey::pinned(label, value))
}

/// A `distribute` locality pattern: `region/zone/subzone`, `*` allowed only as the whole last segment.
pub(super) fn parse_pattern(text: &str) -> Result<LocalityPattern, String> {
    const FORM: &str = "write `REGION/ZONE/SUBZONE`, `REGION/ZONE/*`, `REGION/*` or `*`";
    if text.is_empty() {
        return Err(format!("empty locality pattern; {FORM}"));
    }
    if text.contains(char::is_whitespace) {
        return Err(format!(
            "locality pattern {text:?} contains whitespace; {FORM}"
        ));
    }
    let parts: Vec<&str> = text.split('/').collect();
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            let hint = if i == last && parts[..last].iter().all(|p| !p.is_empty()) {
                format!("; did you mean `{text}*`?")
            } else {
                String::new()
            };
            return Err(format!("`{text}` has an empty segment; {FORM}{hint}"));
        }
        if part.contains('*') && (*part != "*" || i != last) {
            return Err(format!(
                "`{text}`: `*` is allowed only as the whole last segment (no partial names like \
                 `eu-*`, nothing after `*`); {FORM}"
            ));
        }
    }
    let wildcard = parts[last] == "*";
    if parts.len() > 3 {
        let hint = if wildcard && parts.len() == 4 {
            format!("; did you mean `{}`?", parts[..3].join("/"))
        } else {
            String::new()
        };
        return Err(format!(
            "`{text}` has more than 3 segments; a locality is region/zone/subzone{hint}"
        ));
    }
    let segments: Vec<String> = parts[..parts.len() - usize::from(wildcard)]
        .iter()
        .map(|p| p.to_string())
        .collect();
    if !wildcard && segments.len() < 3 {
        return Err(format!(
            "`{text}` names {} only, not a locality: write all three segments \
             (region/zone/subzone), or end with `*` for everything below it; did you mean `{text}/*`?",
            if segments.len() == 1 { "a region" } else { "a zone" }
        ));
    }
    Ok(LocalityPattern { segments, wildcard })
}

fn build_distribute(raw: Vec<RawDistribute>) -> Result<Vec<DistributeRule>, Invalid> {
    let path = FieldPath::root().key("spec").key("distribute");
    let mut rules: Vec<DistributeRule> = Vec::with_capacity(raw.len());
    for (i, rule) in raw.into_iter().enumerate() {
        let at = path.index(i);
        let from = parse_pattern(&rule.from).map_err(|r| (at.key("from"), r))?;
        if let Some(first) = rules.iter().position(|r| r.from == from) {
            return Err((
                at.key("from"),
                format!(
                    "distribute[{first}] has the same `from` ({from}); only the first rule matching \
                     a client applies: merge the two rules"
                ),
            ));
        }
        if let Some(first) = rules.iter().position(|r| r.from.covers(&from)) {
            return Err((
                at.key("from"),
                format!(
                    "this rule can never apply: every client in `{from}` already matches \
                     distribute[{first}] (from `{}`), and only the first matching rule applies; put \
                     the more specific rule first",
                    rules[first].from
                ),
            ));
        }
        let to_path = at.key("to");
        if rule.to.is_empty() {
            return Err((
                to_path,
                "must list at least one locality pattern with a weight, like \
                 `{eu-west4/eu-west4-b/*: 80, eu-west4/eu-west4-c/*: 20}`"
                    .to_string(),
            ));
        }
        let mut to: Vec<(LocalityPattern, u32)> = Vec::with_capacity(rule.to.len());
        for (key, value) in &rule.to {
            let Some(text) = key.as_str() else {
                let shown = serde_yaml_ng::to_string(key).unwrap_or_default();
                return Err((
                    to_path.clone(),
                    format!(
                        "`{}` is not a locality pattern; quote it or {}",
                        shown.trim(),
                        "write `REGION/ZONE/SUBZONE`, `REGION/ZONE/*`, `REGION/*` or `*`"
                    ),
                ));
            };
            let key_path = to_path.key(text);
            let pattern = parse_pattern(text).map_err(|r| (key_path.clone(), r))?;
            let weight = match value.as_i64() {
                Some(w) if (1..=100).contains(&w) => w as u32,
                _ => {
                    let shown = serde_yaml_ng::to_string(value).unwrap_or_default();
                    return Err((
                        key_path,
                        format!(
                            "weight must be a whole number from 1 to 100 (percent of the traffic), \
                             got `{}`",
                            shown.trim()
                        ),
                    ));
                }
            };
            if let Some((other, _)) = to.iter().find(|(p, _)| p.overlaps(&pattern)) {
                return Err((
                    key_path,
                    format!(
                        "`{pattern}` overlaps `{other}` (some locality matches both); each \
                         locality may get one weight: make the patterns disjoint"
                    ),
                ));
            }
            to.push((pattern, weight));
        }
        let sum: u32 = to.iter().map(|(_, w)| w).sum();
        if sum != 100 {
            let listed: Vec<String> = to.iter().map(|(p, w)| format!("{p}: {w}")).collect();
            return Err((
                to_path,
                format!(
                    "weights must add up to 100 (percent), they add up to {sum} ({})",
                    listed.join(", ")
                ),
            ));
        }
        rules.push(DistributeRule { from, to });
    }
    Ok(rules)
}

fn build_health_check(raw: RawHealthCheck) -> Result<HealthCheck, Invalid> {
    let path = FieldPath::root().key("spec").key("healthCheck");
    let set: Vec<&str> = [
        ("http", raw.http.is_some()),
        ("tcp", raw.tcp.is_some()),
        ("grpc", raw.grpc.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if set.len() != 1 {
        let reason = if set.is_empty() {
            "a health check needs exactly one protocol: `http: {path: /healthz}`, `tcp: {}` or \
             `grpc: {}`"
                .to_string()
        } else {
            format!(
                "`{}` are all set; a health check uses exactly one protocol: keep one",
                set.join("` and `")
            )
        };
        return Err((path, reason));
    }
    let protocol = if let Some(http) = raw.http {
        let at = path.key("http");
        let Some(p) = http.path else {
            return Err((
                at.key("path"),
                "missing field `path`: an HTTP health check needs the path to GET, like `/healthz`"
                    .to_string(),
            ));
        };
        if !p.starts_with('/') || p.contains(char::is_whitespace) {
            let hint = if p.contains(char::is_whitespace) || p.is_empty() {
                String::new()
            } else {
                format!("; did you mean `/{p}`?")
            };
            return Err((
                at.key("path"),
                format!("must be a URL path starting with `/` without whitespace, got {p:?}{hint}"),
            ));
        }
        if let Some(host) = &http.host {
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err((
                    at.key("host"),
                    format!(
                        "must be a host name without whitespace, got {host:?}; omit it to send \
                         the cluster's name"
                    ),
                ));
            }
        }
        HealthCheckProtocol::Http {
            path: p,
            host: http.host,
        }
    } else if raw.tcp.is_some() {
        HealthCheckProtocol::Tcp
    } else {
        let grpc = raw.grpc.unwrap_or_default();
        if let Some(service) = &grpc.service {
            if service.trim().is_empty() || service.contains(char::is_whitespace) {
                return Err((
                    path.key("grpc").key("service"),
                    format!(
                        "must be a gRPC service name without whitespace, got {service:?}; omit it \
                         to ask about the server as a whole"
                    ),
                ));
            }
        }
        HealthCheckProtocol::Grpc {
            service: grpc.service,
        }
    };
    let mut hc = HealthCheck::new(protocol);
    if let Some(v) = &raw.interval {
        hc.interval = v.value_at(path.key("interval"))?;
    }
    if let Some(v) = &raw.timeout {
        hc.timeout = v.value_at(path.key("timeout"))?;
    }
    if hc.timeout >= hc.interval {
        let key = if raw.timeout.is_some() {
            "timeout"
        } else {
            "interval"
        };
        return Err((
            path.key(key),
            format!(
                "timeout ({:?}) must be shorter than interval ({:?}): Envoy waits for a probe's \
                 answer before the next one, so a hung endpoint would be probed less often than \
                 asked and take longer to be marked unhealthy",
                hc.timeout, hc.interval
            ),
        ));
    }
    let threshold = |key: &str, v: i64| {
        in_range(
            &path.key(key),
            v,
            1,
            1000,
            " (consecutive probes; more than 1000 would keep a dead endpoint in traffic for over \
             1000 intervals)",
        )
    };
    if let Some(v) = raw.unhealthy_threshold {
        hc.unhealthy_threshold = threshold("unhealthyThreshold", v)?;
    }
    if let Some(v) = raw.healthy_threshold {
        hc.healthy_threshold = threshold("healthyThreshold", v)?;
    }
    Ok(hc)
}

fn build_backups(
    scope: &PolicyScope,
    namespace: &str,
    raw: Vec<RawBackup>,
) -> Result<Vec<BackupService>, Invalid> {
    let path = spec_backups();
    let Some(primary) = scope.service() else {
        return Err((
            path,
            "backups replace one service: set spec.service, or move `backups` to that service's \
             own policy"
                .to_string(),
        ));
    };
    let mut backups: Vec<BackupService> = Vec::with_capacity(raw.len());
    for (i, b) in raw.into_iter().enumerate() {
        let at = path.index(i);
        yaml::check_dns_label(&b.service, "service name").map_err(|r| (at.key("service"), r))?;
        let ns = b.namespace.unwrap_or_else(|| namespace.to_string());
        yaml::check_dns_label(&ns, "namespace").map_err(|r| (at.key("namespace"), r))?;
        if let Some(cluster) = &b.cluster {
            if cluster.trim().is_empty() {
                return Err((
                    at.key("cluster"),
                    "must name a cluster (a topology.istio.io/cluster value); omit it to use the \
                     backup's endpoints in every cluster"
                        .to_string(),
                ));
            }
        }
        let backup = BackupService {
            service: ServiceId::new(ns, b.service),
            cluster: b.cluster,
        };
        if backup.service == *primary {
            return Err((
                at.key("service"),
                format!(
                    "{primary} cannot back itself up; name another service (for another cluster \
                     of the same service, use failoverPriority or the default order instead)"
                ),
            ));
        }
        if let Some(first) = backups.iter().position(|other| *other == backup) {
            return Err((at, format!("duplicate backup (also backups[{first}])")));
        }
        backups.push(backup);
    }
    Ok(backups)
}
