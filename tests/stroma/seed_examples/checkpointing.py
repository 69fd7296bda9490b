import asyncio
from pydantic import BaseModel
from stroma import (
AsyncInMemoryStore,
CheckpointManager,
ContractRegistry,
NodeContract,
RunConfig,
StromaRunner,
stroma_node,
)
class State(BaseModel):
    value: int
class Processed(BaseModel):
    result: int
class Final(BaseModel):
    total: int
registry = ContractRegistry()
c1 = NodeContract(node_id="step1", input_schema=State, output_schema=Processed)
c2 = NodeContract(node_id="step2", input_schema=Processed, output_schema=Final)
registry.register(c1)
registry.register(c2)
store = AsyncInMemoryStore() # (1)!
checkpoint_mgr = CheckpointManager(store)
fail_once = True
@stroma_node("step1", c1)
async def step1(state: State) -> dict:
    print("Running step1")
    return {"result": state.value * 10}
@stroma_node("step2", c2)
async def step2(state: Processed) -> dict:
    global fail_once
    if fail_once:
        fail_once = False
        raise TimeoutError("Simulated failure") # (2)!
    print("Running step2")
    return {"total": state.result + 1}
async def main():
    config1 = RunConfig(run_id="my-run")
    runner1 = StromaRunner(registry, checkpoint_mgr, config1)
    result1 = await runner1.run([step1, step2], State(value=5))
    print(f"First run: {result1.status}") # PARTIAL
    config2 = RunConfig(run_id="my-run", resume_from="step2") # (3)!
    runner2 = StromaRunner(registry, checkpoint_mgr, config2)
    result2 = await runner2.run([step1, step2], State(value=5))
    print(f"Resumed: {result2.status}") # RESUMED
    print(result2.final_state) # total=51
asyncio.run(main())
