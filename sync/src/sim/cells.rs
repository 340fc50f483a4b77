//! Counting the cells of a replicated value from outside its type: every entry of every map
//! and every element of every sequence its `Serialize` impl writes.
//!
//! Why through serde: a bounded counter keeps its cells private (five maps today, each
//! entry one cell), and how it stores them is the escrow's business and may change (issue
//! #13 asks for fewer cells per counter). A measurement that walks the serialized form
//! counts what any shape really holds, and needs no accessor in `tessera-crdt`.

use serde::ser::{self, Serialize};
use thiserror::Error;

use tessera_crdt::BoundedCounter;

/// The cells one bounded counter holds (grants, transfers, consumptions, retirements,
/// refunds: one per map entry).
pub fn counter_cells(counter: &BoundedCounter) -> usize {
    entries(counter)
}

/// Map entries plus sequence elements in `value`'s serialized form, at every depth.
pub fn entries<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = EntryCounter { entries: 0 };
    match value.serialize(&mut counter) {
        Ok(()) => counter.entries,
        // The counter itself never fails; only a value's own `Serialize` may, and the
        // types measured here do not.
        Err(error) => panic!("serializing to count entries: {error}"),
    }
}

/// A failure reported by the value being serialized (`serde::ser::Error::custom`).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct CountError(String);

impl ser::Error for CountError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        CountError(msg.to_string())
    }
}

struct EntryCounter {
    entries: usize,
}

type Done = Result<(), CountError>;

/// Serializer methods for values that hold no entries: nothing to count.
macro_rules! leaves {
    ($($method:ident: $ty:ty,)*) => {
        $(fn $method(self, _: $ty) -> Done {
            Ok(())
        })*
    };
}

impl ser::Serializer for &mut EntryCounter {
    type Ok = ();
    type Error = CountError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    leaves! {
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_i128: i128,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_u128: u128,
        serialize_f32: f32,
        serialize_f64: f64,
        serialize_char: char,
        serialize_str: &str,
        serialize_bytes: &[u8],
        serialize_unit_struct: &'static str,
    }
    fn serialize_none(self) -> Done {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Done {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Done {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, CountError> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, CountError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, CountError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, CountError> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, CountError> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, CountError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, CountError> {
        Ok(self)
    }
}

/// A sequence element is an entry (and may hold entries of its own).
impl ser::SerializeSeq for &mut EntryCounter {
    type Ok = ();
    type Error = CountError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.entries += 1;
        value.serialize(&mut **self)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

/// A map entry is counted at its key; its key and value may hold entries of their own.
impl ser::SerializeMap for &mut EntryCounter {
    type Ok = ();
    type Error = CountError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
        self.entries += 1;
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(&mut **self)
    }
    fn end(self) -> Done {
        Ok(())
    }
}

/// Tuples, structs and variants are one value with parts, not collections: their fields
/// are walked, not counted.
macro_rules! walk_fields {
    ($($trait:ident::$method:ident($($name:ty)?);)*) => {
        $(impl ser::$trait for &mut EntryCounter {
            type Ok = ();
            type Error = CountError;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $name,)? value: &T) -> Done {
                value.serialize(&mut **self)
            }
            fn end(self) -> Done {
                Ok(())
            }
        })*
    };
}

walk_fields! {
    SerializeTuple::serialize_element();
    SerializeTupleStruct::serialize_field();
    SerializeTupleVariant::serialize_field();
    SerializeStruct::serialize_field(&'static str);
    SerializeStructVariant::serialize_field(&'static str);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tessera_crdt::NodeId;

    #[test]
    fn a_counter_has_one_cell_per_grant_transfer_consumption_retirement_and_refund() {
        let (a, b, c) = (NodeId(1), NodeId(1 << 60), NodeId(3));
        let mut counter = BoundedCounter::new();
        assert_eq!(counter_cells(&counter), 0);
        counter.grant(a, 100).unwrap();
        counter.transfer(a, b, 40).unwrap();
        counter.transfer(a, c, 10).unwrap();
        counter.transfer(a, b, 5).unwrap(); // the same cell, grown
        counter.consume(b, 7).unwrap();
        counter.consume(a, 1).unwrap();
        counter.refund(b, 2).unwrap();
        counter.retire(c, 10).unwrap();
        // granted a; transferred a→b, a→c; consumed a, b; retired c; refunded b.
        assert_eq!(counter_cells(&counter), 7);
    }

    #[test]
    fn nested_collections_count_at_every_depth_and_tuples_do_not() {
        let value: BTreeMap<(u64, u64), Vec<u8>> =
            BTreeMap::from([((1, 2), vec![1, 2, 3]), ((3, 4), vec![])]);
        assert_eq!(entries(&value), 2 + 3);
        assert_eq!(entries(&(1u8, 2u8)), 0);
    }
}
