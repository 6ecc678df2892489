// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

/// A minimal ERC-20 for the tests, in the three behaviours the channel must handle:
/// Standard returns true; NoReturn returns nothing (as tokens written before the standard fixed
/// the return value do, e.g. USDT on Ethereum); ReturnsFalse refuses every transfer by
/// returning false instead of reverting.
contract TestToken {
    enum Mode {
        Standard,
        NoReturn,
        ReturnsFalse
    }

    Mode public immutable mode;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor(Mode mode_) {
        mode = mode_;
    }

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        if (mode == Mode.ReturnsFalse) return false;
        _move(msg.sender, to, amount);
        _done();
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        if (mode == Mode.ReturnsFalse) return false;
        allowance[from][msg.sender] -= amount; // reverts (underflow) without allowance
        _move(from, to, amount);
        _done();
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        balanceOf[from] -= amount; // reverts (underflow) without balance
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }

    /// In NoReturn mode, ends the call here with empty return data.
    function _done() private view {
        if (mode == Mode.NoReturn) {
            assembly {
                return(0, 0)
            }
        }
    }
}
