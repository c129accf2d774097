//! Which column types the native format carries, and how: each type on this list is selected
//! and loaded in a way that gives back the stored bits. A type that is not on it fails the
//! dump (the dump names the column) instead of travelling in a form that may load as NULL.

use super::{quote, schema::Column};

/// How one column's values travel through the data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// The text protocol's bytes, loaded as they are: numbers, temporal types, strings and
    /// blobs (raw bytes, the connection has no character set), ENUM and SET, and spatial
    /// types (their internal form, SRID and WKB, which the column takes back as is).
    Raw,
    /// FLOAT: the text protocol rounds it to 6 digits; its DOUBLE form round-trips.
    Float,
    /// BIT: its bytes as an unsigned integer, turned back on load.
    Bit,
    /// Types that read a *binary* string as their internal form (MariaDB's UUID, INET4 and
    /// INET6: 16 or 4 bytes) but are sent as text: loaded as a character string, or every
    /// value would fail to convert (and, without strict checks, become NULL).
    /// MySQL's JSON refuses binary strings outright, so it goes the same way.
    Text,
}

/// The codec of an `information_schema.COLUMNS.DATA_TYPE` (lowercase), or `None` for a type
/// the native format does not know.
pub fn codec(data_type: &str) -> Option<Codec> {
    Some(match data_type {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
        | "numeric" | "double" | "real" | "double precision" => Codec::Raw,
        "float" => Codec::Float,
        "bit" => Codec::Bit,
        "date" | "time" | "datetime" | "timestamp" | "year" => Codec::Raw,
        "char" | "varchar" | "binary" | "varbinary" | "tinytext" | "text" | "mediumtext"
        | "longtext" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "enum" | "set" => {
            Codec::Raw
        }
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => Codec::Raw,
        "uuid" | "inet4" | "inet6" | "json" => Codec::Text,
        _ => return None,
    })
}

/// The column's expression in the dump's SELECT.
pub fn select_expr(c: &Column) -> String {
    let name = quote(&c.name);
    match codec(&c.data_type) {
        Some(Codec::Float) => format!("CAST({name} AS DOUBLE)"),
        Some(Codec::Bit) => format!("CAST({name} AS UNSIGNED)"),
        _ => name,
    }
}

/// The column's target in LOAD DATA's column list, and its `SET` clause when the value goes
/// through user variable `@c{i}` first. A type a snapshot records but this table does not
/// know (a snapshot of an older coffer took every type) loads as it was dumped: raw.
pub fn load_target(i: usize, c: &Column) -> (String, Option<String>) {
    let name = quote(&c.name);
    match codec(&c.data_type) {
        Some(Codec::Bit) => (
            format!("@c{i}"),
            Some(format!("{name} = CAST(@c{i} AS UNSIGNED)")),
        ),
        Some(Codec::Text) => (
            format!("@c{i}"),
            Some(format!("{name} = CONVERT(@c{i} USING utf8mb4)")),
        ),
        _ => (name, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> Column {
        Column {
            name: name.into(),
            data_type: t.into(),
        }
    }

    #[test]
    fn unknown_types_have_no_codec() {
        assert_eq!(codec("vector"), None);
        assert_eq!(codec(""), None);
        assert_eq!(codec("uuid"), Some(Codec::Text));
        assert_eq!(codec("point"), Some(Codec::Raw));
    }

    #[test]
    fn text_typed_columns_load_as_character_strings() {
        assert_eq!(
            load_target(3, &col("u", "uuid")),
            (
                "@c3".to_string(),
                Some("`u` = CONVERT(@c3 USING utf8mb4)".to_string())
            )
        );
        assert_eq!(select_expr(&col("u", "uuid")), "`u`");
        assert_eq!(select_expr(&col("f", "float")), "CAST(`f` AS DOUBLE)");
        assert_eq!(load_target(0, &col("g", "geometry")), ("`g`".into(), None));
    }
}
