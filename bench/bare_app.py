"""The baseline: a bare single-worker FastAPI app answering what sysinfo's version route answers."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/test/sysinfo/version")
async def version() -> dict[str, str]:
    return {"plugin": "sysinfo", "version": "0.1.0"}
