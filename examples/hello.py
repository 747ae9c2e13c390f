"""The asyncio documentation's Hello World, run on ferroloop."""

import asyncio

import ferroloop


async def main():
    print("Hello ...")
    await asyncio.sleep(1)
    print("... World!")


ferroloop.run(main())
