"""Seed 001 (Runner reference): the quick() and node() examples, as published."""

import asyncio

from pydantic import BaseModel

from stroma import NodeContract, StromaRunner, parallel, stroma_node


class InputState(BaseModel):
    value: int


class OutputState(BaseModel):
    result: int


runner = StromaRunner.quick()


@runner.node("double", input=InputState, output=OutputState)
async def double(state: InputState) -> dict:
    return {"result": state.value * 2}


class In(BaseModel):
    url: str


class Out(BaseModel):
    url: str
    content: str


@stroma_node("extract", NodeContract(node_id="extract", input_schema=In, output_schema=Out))
async def extract(state: In) -> dict:
    return {"url": state.url, "content": "..."}


class Document(BaseModel):
    text: str


class Entities(BaseModel):
    entities: list[str]


@runner.node("extract_entities", input=Document, output=Entities)
async def extract_entities(state: Document) -> dict:
    return {"entities": ["Python", "Pydantic"]}


class Lang(BaseModel):
    language: str


@runner.node("detect_language", input=Document, output=Lang)
async def detect_language(state: Document) -> tuple[dict, int, int, str]:
    return {"language": "en"}, 120, 30, "gpt-4o-mini"


async def main() -> None:
    result = await runner.run([double], InputState(value=5))
    print(result.status, result.final_state)
    fan = await runner.run([parallel(extract_entities, detect_language)], Document(text="x"))
    print(fan.status, fan.total_tokens, sorted(fan.final_state.model_dump()))
    print(extract._stroma_node_id, extract._stroma_contract.output_schema.__name__)


asyncio.run(main())
