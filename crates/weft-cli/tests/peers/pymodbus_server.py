"""A Modbus TCP server on pymodbus (a peer weft did not write), for the
device tests: unit 1, input registers 0-3 = 215, 1, 2, 3, holding
registers 10-11 writable (start 0). Usage: pymodbus_server.py PORT."""

import asyncio
import logging
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import StartAsyncTcpServer


async def main(port: int) -> None:
    device = ModbusDeviceContext(
        # pymodbus data blocks are 1-based: address 1 is wire address 0.
        ir=ModbusSequentialDataBlock(1, [215, 1, 2, 3]),
        hr=ModbusSequentialDataBlock(11, [0, 0]),
    )
    context = ModbusServerContext(devices={1: device}, single=False)
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", port))


if __name__ == "__main__":
    # pymodbus 3.16 warns that this API goes in v4; the version is pinned.
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(int(sys.argv[1])))
