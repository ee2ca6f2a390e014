//! The one error of every file the server reads (the endpoints file, the policy files): the file, the
//! document (in files of several), the line and column where known, the field path and the reason.
//!
//! `Display` is `FILE[:LINE[:COLUMN]]: [document N: ][FIELD: ]REASON`, for example
//! `endpoints.yaml:9:5: services[0].endpoints[1].port: port 0 is out of range (1-65535)` or
//! `policies/shop.yaml:9:5: document 2: spec.panicThreshold: must be between 0 and 100 (percent), got 150`.

use std::fmt;

use crate::config::yaml::{self, FieldPath};

/// What kind of file an error is about: the words its `Read` and `Empty` messages use. Each file
/// format declares its own (`config::endpoints::ENDPOINTS_FILE`, `policy::parse::POLICY_FILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileKind {
    /// What could not be read: `cannot read {what}: REASON`.
    pub what: &'static str,
    /// What an empty file lacks: `file is empty; {needs}`.
    pub needs: &'static str,
}

/// Why a file was rejected (see the module documentation for its `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The file or directory could not be read (missing, permissions, not UTF-8).
    Read {
        kind: FileKind,
        file: String,
        reason: String,
    },
    /// No YAML document with content.
    Empty { kind: FileKind, file: String },
    /// The YAML itself is malformed.
    Syntax {
        file: String,
        /// 1-based, in files of several documents; `None` in single-document files.
        document: Option<usize>,
        line: Option<usize>,
        column: Option<usize>,
        reason: String,
    },
    /// Well-formed YAML with a wrong, missing, unknown, meaningless or conflicting field.
    Invalid {
        file: String,
        /// 1-based, in files of several documents; `None` in single-document files.
        document: Option<usize>,
        line: Option<usize>,
        column: Option<usize>,
        /// Like `services[0].endpoints[1].port`; empty for the document as a whole.
        field: String,
        reason: String,
    },
}

impl FileError {
    /// A file (or directory) of `kind` that could not be read.
    pub fn read(kind: FileKind, file: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self::Read {
            kind,
            file: file.into(),
            reason: reason.to_string(),
        }
    }

    /// The content of a file of `kind` as text; bytes that are not UTF-8 are a [`FileError::Read`].
    pub fn text<'a>(kind: FileKind, file: &str, bytes: &'a [u8]) -> Result<&'a str, Self> {
        std::str::from_utf8(bytes)
            .map_err(|err| Self::read(kind, file, format_args!("not valid UTF-8: {err}")))
    }

    pub fn file(&self) -> &str {
        match self {
            Self::Read { file, .. }
            | Self::Empty { file, .. }
            | Self::Syntax { file, .. }
            | Self::Invalid { file, .. } => file,
        }
    }

    /// 1-based document index within the file, in files of several documents.
    pub fn document(&self) -> Option<usize> {
        match self {
            Self::Syntax { document, .. } | Self::Invalid { document, .. } => *document,
            Self::Read { .. } | Self::Empty { .. } => None,
        }
    }

    /// 1-based line, where known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { line, .. } | Self::Invalid { line, .. } => *line,
            Self::Read { .. } | Self::Empty { .. } => None,
        }
    }

    /// 1-based column, where known.
    pub fn column(&self) -> Option<usize> {
        match self {
            Self::Syntax { column, .. } | Self::Invalid { column, .. } => *column,
            Self::Read { .. } | Self::Empty { .. } => None,
        }
    }

    /// The field path (empty if the problem is not one field's).
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. } => field,
            _ => "",
        }
    }

    /// The reason alone, without file, document, line or field.
    pub fn reason(&self) -> String {
        match self {
            Self::Read { kind, reason, .. } => format!("cannot read {}: {reason}", kind.what),
            Self::Empty { .. } => "file is empty".to_string(),
            Self::Syntax { reason, .. } => format!("invalid YAML: {reason}"),
            Self::Invalid { reason, .. } => reason.clone(),
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file())?;
        if let Some(line) = self.line() {
            write!(f, ":{line}")?;
            if let Some(column) = self.column() {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(document) = self.document() {
            write!(f, "document {document}: ")?;
        }
        let field = self.field();
        if !field.is_empty() {
            write!(f, "{field}: ")?;
        }
        match self {
            Self::Empty { kind, .. } => write!(f, "file is empty; {}", kind.needs),
            _ => f.write_str(&self.reason()),
        }
    }
}

impl std::error::Error for FileError {}

/// A value found invalid after deserializing: where (the field path) and why (the reason alone).
/// [`Document::invalid`] turns it into a [`FileError`] with the field's position.
pub(crate) type Invalid = (FieldPath, String);

/// One document of a file being parsed: what the errors about it carry. The parsers build their
/// [`FileError`]s from serde_yaml_ng errors and field paths through it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Document<'a> {
    pub file: &'a str,
    /// The whole file (positions are found in it).
    pub text: &'a str,
    /// 1-based, in files of several documents; `None` in single-document files (then the first).
    pub number: Option<usize>,
}

impl Document<'_> {
    /// An error from [`yaml::probe`]: a duplicate key is a schema problem, anything else malformed YAML.
    pub fn probe_error(&self, err: &serde_yaml_ng::Error) -> FileError {
        if yaml::is_duplicate_key(err) {
            return self.schema_error(err);
        }
        let p = yaml::syntax_problem(err);
        FileError::Syntax {
            file: self.file.to_string(),
            document: self.number,
            line: p.line,
            column: p.column,
            reason: p.reason,
        }
    }

    /// An error from deserializing the document into the format's types.
    pub fn schema_error(&self, err: &serde_yaml_ng::Error) -> FileError {
        let p = yaml::schema_problem(err);
        FileError::Invalid {
            file: self.file.to_string(),
            document: self.number,
            line: p.line,
            column: p.column,
            field: p.field,
            reason: p.reason,
        }
    }

    /// An invalid value found after deserializing, at the position of `path` (or its nearest ancestor).
    pub fn invalid(&self, (path, reason): Invalid) -> FileError {
        let index = self.number.map_or(0, |n| n - 1);
        let pos = yaml::locate_nearest(self.text, index, &path);
        FileError::Invalid {
            file: self.file.to_string(),
            document: self.number,
            line: pos.map(|p| p.line),
            column: pos.map(|p| p.column),
            field: path.to_string(),
            reason,
        }
    }
}
