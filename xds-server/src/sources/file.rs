//! The endpoints file: the embedded default source, used with no Kubernetes cluster at all.
