//! Reading failover policy YAML files into a validated [`super::PolicySet`].
