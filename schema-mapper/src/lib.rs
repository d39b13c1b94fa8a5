//! Pure translation of learning records between qualifications frameworks.
