//! The capture against a real MariaDB.
