"""One line for any validation error: the command line, its error handler and the server's 400s share it."""

import pytest
from pydantic import BaseModel, Field, ValidationError, model_validator

from videor1.config_errors import rule, validation_message


class Inner(BaseModel):
    size: int = Field(1, gt=0)


class Outer(BaseModel):
    inner: Inner = Field(default_factory=Inner)
    low: int = 0
    high: int = 1

    @model_validator(mode="after")
    def _ordered(self) -> "Outer":
        if self.low > self.high:
            raise ValueError("low exceeds high")
        if self.low < 0:
            raise rule("low", "low is negative: set low=0 or more")
        return self


def failure(**values) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(values)
    return caught.value


def test_each_error_is_its_dotted_key_and_reason_on_one_line():
    message = validation_message(failure(inner={"size": 0}, high="x"))
    assert message == "inner.size: Input should be greater than 0; high: Input should be a valid integer, unable to " \
        "parse string as an integer"


def test_a_whole_config_error_is_its_reason_or_the_name_the_caller_gives_it():
    assert validation_message(failure(low=2)) == "low exceeds high"  # no "Value error, " prefix
    assert validation_message(failure(low=2), whole="value") == "value: low exceeds high"


def test_a_rule_names_its_key_itself():
    assert validation_message(failure(low=-1), whole="value") == "low is negative: set low=0 or more"


def test_text_that_is_not_json_has_no_key():
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate_json("{not json")
    assert validation_message(caught.value, whole="body") == "invalid JSON: key must be a string at line 1 column 2"


class RequestErrors:
    """FastAPI's RequestValidationError: pydantic's errors under a "body" location."""

    def errors(self):
        return [{"type": "missing", "loc": ("body", "messages"), "msg": "Field required"},
                {"type": "model_attributes_type", "loc": ("body",), "msg": "Input should be a valid dictionary"}]


def test_dropped_location_parts_leave_the_clients_own_names():
    assert validation_message(RequestErrors(), whole="body", drop={"body"}) == \
        "messages: Field required; body: Input should be a valid dictionary"
