import asyncio
from pydantic import BaseModel
from stroma import ReliabilityContext, StromaStep, RunConfig, ContractRegistry, CheckpointManager, AsyncInMemoryStore
class DocInput(BaseModel):
    text: str
class Summary(BaseModel):
    text: str
config = RunConfig(run_id="step-run"); registry = ContractRegistry(); manager = CheckpointManager(AsyncInMemoryStore())
ctx = ReliabilityContext.for_run(config, registry, manager)
step = StromaStep(ctx)
@step("summarize", input=DocInput, output=Summary)
async def summarize(state: DocInput) -> dict:
    return {"text": "..."}
async def main():
    result = await summarize(DocInput(text="hello"))
    print(result.final_state)
    r = ctx.build_result("COMPLETED", result.final_state); print(r.status, len(r.trace))
asyncio.run(main())
