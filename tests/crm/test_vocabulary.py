"""The one event vocabulary and a project's mappings onto it."""

from crm.vocabulary import INTERACTION_KINDS, ORDER_EVENTS, canonical_name, stored_names


def test_stored_names_are_the_canonical_ones_and_those_mapped_onto_them():
    mappings = {"Item Seen": "Product Viewed", "Bought": "Order Completed", "Clicked": "Product Clicked"}
    assert stored_names(INTERACTION_KINDS, mappings) == {
        "Product Viewed": "Product Viewed",
        "Product Added": "Product Added",
        "Order Completed": "Order Completed",
        "Item Seen": "Product Viewed",
        "Bought": "Order Completed",
    }
    assert stored_names(ORDER_EVENTS, mappings) == {"Order Completed": "Order Completed", "Bought": "Order Completed"}


def test_a_canonical_name_mapped_away_is_read_as_its_mapping_everywhere():
    mappings = {"Product Added": "Product Viewed"}
    assert canonical_name("Product Added", mappings) == "Product Viewed"
    assert stored_names({"Product Added"}, mappings) == {}
    assert stored_names({"Product Viewed"}, mappings) == {
        "Product Viewed": "Product Viewed",
        "Product Added": "Product Viewed",
    }
